"""tools/benchmark.py on the CPU with small sizes: every case runs and prints its JSON line."""
import importlib.util
import json
import subprocess
import sys

from conftest import REPO_ROOT, shared_path
from tiny_models import TINY_MODEL_OPTS


def test_benchmark_prints_one_json_line_per_case_and_precision():
    command = [
        sys.executable, str(REPO_ROOT / "tools/benchmark.py"),
        "--config-file", str(REPO_ROOT / "configs/camvid/maskformer_R50.yaml"),
        "--device", "cpu", "--precision", "fp32", "bf16", "--batch-size", "2", "--crop", "64",
        "--infer-size", "64", "96", "--infer-batch-size", "2", "--iters", "2", "--warmup", "1",
        "--loader-warmup", "1",
        "--datasets-root", str(shared_path()),
        "INPUT.CROP.SIZE", "(64, 64)", "INPUT.MIN_SIZE_TRAIN", "(72,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "DATALOADER.NUM_WORKERS", "0",
    ] + TINY_MODEL_OPTS
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    cases = {(line["case"], line["precision"]) for line in lines}
    assert cases == {(case, precision)
                     for case in ("train_synthetic", "train_loader", "infer_b1", "infer_batched")
                     for precision in ("fp32", "bf16")}
    for line in lines:
        assert line["img_per_s"] > 0, line
        assert line["batch_size"] == (1 if line["case"] == "infer_b1" else 2)
        if line["case"].startswith("train"):
            assert line["final_loss"] > 0


def test_config_overrides_may_follow_the_precision_flag():
    spec = importlib.util.spec_from_file_location("benchmark", REPO_ROOT / "tools/benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    args = benchmark.parse_args(["--precision", "fp32", "bf16", "DATALOADER.NUM_WORKERS", "12",
                                 "ACCELERATION.TEST_CUDA_GRAPH", "False"])
    assert args.precision == ["fp32", "bf16"]
    assert args.opts == ["DATALOADER.NUM_WORKERS", "12", "ACCELERATION.TEST_CUDA_GRAPH", "False"]
    assert benchmark.parse_args(["--iters", "3"]).opts == []
