"""tools/benchmark.py on the CPU with small sizes: every case runs and prints its JSON line."""
import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO_ROOT, shared_path
from tiny_models import TINY_MODEL_OPTS


def test_benchmark_prints_one_json_line_per_case_and_precision():
    command = [
        sys.executable, str(REPO_ROOT / "tools/benchmark.py"),
        "--config-file", str(REPO_ROOT / "configs/camvid/maskformer_R50.yaml"),
        "--device", "cpu", "--precision", "fp32", "bf16", "--batch-size", "2", "--crop", "64",
        "--infer-size", "64", "96", "--infer-batch-size", "2", "--iters", "2", "--warmup", "1",
        "--loader-warmup", "1",
        "--cases", "train_synthetic", "train_loader", "infer_b1", "infer_batched", "loader_only",
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
                     for precision in ("fp32", "bf16")} | {("loader_only", "-")}
    for line in lines:
        assert line["img_per_s"] > 0, line
        assert line["batch_size"] == (1 if line["case"] == "infer_b1" else 2)
        if line["case"].startswith("train"):
            assert line["final_loss"] > 0
        if line["case"] in ("train_loader", "loader_only"):  # where the loader's time went
            assert line["cpu"]["main_cpu_ms_per_step"] > 0 and 0 < line["cpu"]["machine_busy"] <= 1
        if line["case"] == "train_loader":
            assert line["data_wait_ms_per_step"] > 0


def test_config_overrides_may_follow_the_precision_flag():
    spec = importlib.util.spec_from_file_location("benchmark", REPO_ROOT / "tools/benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    args = benchmark.parse_args(["--precision", "fp32", "bf16", "DATALOADER.NUM_WORKERS", "12",
                                 "ACCELERATION.TEST_CUDA_GRAPH", "False"])
    assert args.precision == ["fp32", "bf16"]
    assert args.opts == ["DATALOADER.NUM_WORKERS", "12", "ACCELERATION.TEST_CUDA_GRAPH", "False"]
    assert benchmark.parse_args(["--iters", "3"]).opts == []


@pytest.mark.parametrize("flags,opts", [
    (["--compile", "--channels-last", "--cudnn-benchmark"], []),
    ([], ["ACCELERATION.COMPILE", "True", "ACCELERATION.CHANNELS_LAST", "True",
          "CUDNN_BENCHMARK", "True"]),
], ids=["flags", "keys"])
def test_flags_and_config_keys_turn_on_the_same_options(flags, opts):
    benchmark = _benchmark_module()
    cfg = benchmark.setup_cfg(benchmark.parse_args(
        ["--device", "cpu", "--config-file", str(REPO_ROOT / "configs/ade20k/maskformer_R50.yaml")]
        + flags + opts))
    assert cfg.ACCELERATION.COMPILE and cfg.ACCELERATION.CHANNELS_LAST and cfg.CUDNN_BENCHMARK
    default_args = benchmark.parse_args(["--device", "cpu"])
    default = benchmark.setup_cfg(default_args)
    assert not (default.ACCELERATION.COMPILE or default.ACCELERATION.CHANNELS_LAST
                or default.CUDNN_BENCHMARK)
    assert default_args.warmup == 5  # compiled code takes longer to settle: 20 by default


def test_compiled_runs_warm_up_longer_unless_told():
    benchmark = _benchmark_module()
    for argv, warmup in ((["--compile"], 20), (["ACCELERATION.COMPILE", "True"], 20),
                         (["--compile", "--warmup", "3"], 3), ([], 5)):
        args = benchmark.parse_args(["--device", "cpu"] + argv)
        benchmark.setup_cfg(args)
        assert args.warmup == warmup, argv


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("benchmark", REPO_ROOT / "tools/benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    return benchmark


def test_phase_device_times_attribute_kernels_to_the_innermost_phase():
    benchmark = _benchmark_module()
    event = lambda cat, name, ts, dur, **args: {"ph": "X", "cat": cat, "name": name, "ts": ts,
                                                "dur": dur, "args": args}
    trace = {"traceEvents": [
        event("user_annotation", "phase:losses", 0, 100),
        event("user_annotation", "phase:matcher", 10, 20),
        event("cuda_runtime", "cudaLaunchKernel", 5, 1, correlation=1),
        event("cuda_runtime", "cudaLaunchKernel", 15, 1, correlation=2),
        event("cuda_runtime", "cudaLaunchKernel", 200, 1, correlation=3),
        event("kernel", "sm90_xmma_gemm_bf16", 50, 3000, correlation=1),
        event("kernel", "elementwise_kernel", 60, 500, correlation=2),
        event("kernel", "elementwise_kernel", 300, 250, correlation=3),
    ]}
    times = benchmark.phase_device_times(trace)
    assert times == {"losses": {"ms": 3.0, "matrix_ms": 3.0}, "matcher": {"ms": 0.5, "matrix_ms": 0.0},
                     "other": {"ms": 0.25, "matrix_ms": 0.0}}


def test_phases_report_flops_and_time_of_each_phase():
    command = [
        sys.executable, str(REPO_ROOT / "tools/benchmark.py"),
        "--config-file", str(REPO_ROOT / "configs/ade20k/maskformer_R50.yaml"),
        "--device", "cpu", "--cases", "train_synthetic", "--batch-size", "2", "--crop", "64",
        "--iters", "1", "--warmup", "1", "--phases",
    ] + TINY_MODEL_OPTS
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (line,) = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    phases = {row["phase"]: row for row in line["phases"]}
    assert list(phases) == list(_benchmark_module().PHASES) + ["other"]
    for name in ("backbone", "pixel decoder", "transformer decoder", "backward"):
        assert phases[name]["gflop"] > 0 and phases[name]["device_ms"] > 0, name
    # backward costs about twice the forward's FLOPs
    forward = sum(phases[n]["gflop"] for n in ("backbone", "pixel decoder", "transformer decoder"))
    assert 1.5 * forward < phases["backward"]["gflop"] < 2.5 * forward
    assert "| backbone |" in completed.stderr



def _spin():
    while True:
        pass


def _spin_until(stop: threading.Event):
    while not stop.is_set():
        pass


def test_cpu_use_counts_the_forked_workers_busy_and_nothing_else():
    """CpuUse (the loader cases' "cpu" field) sees a forked child that spins as one busy core,
    leaves out a child that runs another program (as inductor's compile workers do), and names
    the thread of its own process that spins."""
    benchmark = _benchmark_module()
    cpu = benchmark.CpuUse()
    if not cpu.available:
        pytest.skip("needs /proc (Linux)")
    forked = multiprocessing.get_context("fork").Process(target=_spin, daemon=True)
    forked.start()
    other = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    stop = threading.Event()
    spinning_thread = threading.Thread(target=_spin_until, args=(stop,))
    try:
        time.sleep(0.3)  # the interpreter's start-up, outside the window
        workers = cpu.workers()
        spinning_thread.start()
        cpu.start()
        time.sleep(0.6)
        use = cpu.result(steps=3)
    finally:
        stop.set()
        spinning_thread.join()
        forked.kill()
        other.kill()
        forked.join()
        other.wait()
    assert forked.pid in workers and other.pid not in workers
    assert use["workers"] >= 1
    # cores busy in the workers: three processes and a thread spin on CI's two cores, so the
    # forked worker gets about half of one
    assert use["workers_busy"] * use["workers"] > 0.25
    assert 0 < use["machine_busy"] <= 1 and use["cores"] == os.cpu_count()
    # The parent's main thread only slept; its other thread spun.
    shares = dict(use["threads"])
    assert shares.get("main", 0) < 0.2 and use["thread_count"] >= 2
    assert max(share for name, share in use["threads"] if name != "main") > 0.25
