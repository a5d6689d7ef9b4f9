"""train_net.py: OUTPUT_DIR of a previous run, test-time augmentation of a panoptic config,
logging from several workers, results through the public API."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from helpers import register_first
from tiny_models import QUICKSTART_CONFIG, save_quickstart_weights

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402

# The first 8 images of the quick start's validation set: evaluation in a few seconds.
VAL_SUBSET = register_first("synthetic_shapes_panoptic_val", 8)


def parse(*argv):
    return train_net.argument_parser().parse_args(["--config-file", str(QUICKSTART_CONFIG)] + list(argv))


# ------------------------------------------------------------------ OUTPUT_DIR of a finished run

def test_finished_run_in_output_dir_is_not_replaced(tmp_path, capsys):
    (tmp_path / "model_final.pth").write_bytes(b"the previous run's model")
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    status = train_net.cli(["--config-file", str(QUICKSTART_CONFIG), "OUTPUT_DIR", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("train_net.py")] == [
        f"train_net.py: error: OUTPUT_DIR {tmp_path} holds a finished run (model_final.pth, "
        "last_checkpoint), which training would replace; pass --resume to continue it, set "
        "OUTPUT_DIR to a new directory, or pass --overwrite"]
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
    assert (tmp_path / "model_final.pth").read_bytes() == b"the previous run's model"


def test_unfinished_run_is_named_as_such(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000199.pth")
    with pytest.raises(train_net.ConfigError, match=r"holds an unfinished run \(last_checkpoint\)"):
        train_net.load_and_check(parse("OUTPUT_DIR", str(tmp_path)))


@pytest.mark.parametrize("flag", ["--resume", "--overwrite", "--eval-only"])
def test_output_dir_of_a_previous_run_with_resume_overwrite_or_evaluation(tmp_path, flag):
    (tmp_path / "model_final.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    weights = ["MODEL.WEIGHTS", str(tmp_path / "model_final.pth")] if flag == "--eval-only" else []
    cfg = train_net.load_and_check(parse(flag, "OUTPUT_DIR", str(tmp_path), *weights))
    assert cfg.OUTPUT_DIR == str(tmp_path)


# ------------------------------------------------------------------ test-time augmentation

def test_test_time_augmentation_of_a_panoptic_config(tmp_path):
    """The quick start's panoptic config with TEST.AUG.ENABLED: the semantic output is augmented
    and evaluated, after the normal evaluation, and the final line reports all three."""
    weights = save_quickstart_weights(tmp_path / "untrained.pth")
    output = tmp_path / "eval"
    results = train_net.main(parse(
        "--eval-only", "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(output),
        "DATASETS.TEST", f"('{VAL_SUBSET}',)", "DATALOADER.NUM_WORKERS", "0",
        "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(96, 128)", "TEST.AUG.MAX_SIZE", "256"))
    assert set(results) == {"sem_seg", "panoptic_seg", "segm", "sem_seg_TTA"}
    assert set(results["sem_seg_TTA"]) == set(results["sem_seg"])
    assert (output / "inference_TTA" / "sem_seg_predictions.json").is_file()
    final = [line for line in (output / "log.txt").read_text().splitlines() if "Final results" in line]
    assert len(final) == 1
    assert final[0].endswith(
        f"Final results on {VAL_SUBSET}: mIoU {results['sem_seg']['mIoU']:.2f}, "
        f"PQ {results['panoptic_seg']['PQ']:.2f}, AP {results['segm']['AP']:.2f}, "
        "mIoU with test-time augmentation "
        f"{results['sem_seg_TTA']['mIoU']:.2f}")


def test_test_time_augmentation_without_semantic_metrics_is_refused(tmp_path):
    with pytest.raises(train_net.ConfigError) as error:
        train_net.load_and_check(parse(
            "--eval-only", "MODEL.WEIGHTS", str(tmp_path / "any.pth"), "OUTPUT_DIR", str(tmp_path),
            "DATASETS.TEST", "('coco_2017_val_panoptic',)", "TEST.AUG.ENABLED", "True"))
    assert str(error.value) == (
        "TEST.AUG.ENABLED: test-time augmentation averages semantic outputs, and "
        "coco_2017_val_panoptic (evaluator_type 'coco_panoptic_seg') has no semantic metrics; "
        "set TEST.AUG.ENABLED False")


# ------------------------------------------------------------------ several workers

TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")


@pytest.mark.parametrize("device", ["cpu",
                                    pytest.param("cuda", marks=[pytest.mark.gpu, TWO_GPUS])])
def test_only_rank_0_writes_to_stdout_and_log_txt(tmp_path, device):
    """2 workers (CPU: Gloo; GPU: NCCL, DDP with device_ids) train 2 steps from a partial
    checkpoint and evaluate: each worker logs the checkpoint summary (mask_former.weights),
    rank 0 to stdout and log.txt, rank 1 to log.txt.rank1 only; the final results (rank 0's)
    are in stdout and log.txt once."""
    weights = save_quickstart_weights(tmp_path / "six_classes.pth", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6")
    output = tmp_path / "run"
    command = [sys.executable, str(REPO_ROOT / "train_net.py"), "--config-file", str(QUICKSTART_CONFIG),
               "--num-gpus", "2", "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(output),
               "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0",
               "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "MODEL.DEVICE", device]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # launch starts Gloo workers where it sees no GPU
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env,
                               timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = "weights loaded; 3 have another shape (sem_seg_head.predictor.class_embed.weight"
    final = "Final results on synthetic_shapes_panoptic_val: mIoU "
    log = (output / "log.txt").read_text()
    rank1 = (output / "log.txt.rank1").read_text()
    assert completed.stdout.count(summary) == 1 and log.count(summary) == 1
    assert rank1.count(summary) == 1
    assert completed.stdout.count(final) == 1 and log.count(final) == 1 and final not in rank1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_returns_the_evaluation_results(tmp_path):
    """The Trainer (its copy of DefaultTrainer.__init__) on one GPU: 3 steps, then the final
    evaluation, whose results train() returns."""
    results = train_net.main(parse(
        "OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cuda", "SOLVER.MAX_ITER", "3",
        "SOLVER.IMS_PER_BATCH", "4", "DATASETS.TEST", f"('{VAL_SUBSET}',)",
        "DATALOADER.NUM_WORKERS", "0"))
    assert set(results) == {"sem_seg", "panoptic_seg", "segm"}
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    assert (tmp_path / "model_final.pth").is_file()
