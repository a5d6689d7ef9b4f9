"""Data-parallel training and evaluation on 2 CPU worker processes (Gloo) through detectron2's launch.

A step on two workers, each with half the batch, must land on the parameters one process reaches
with the whole batch: DDP averages gradients and the criterion normalises by the number of masks
averaged over all workers. Evaluation on two workers must give the metrics of one.
"""
import json
import socket
import sys

import torch
from detectron2.engine import create_ddp_model, launch
from detectron2.modeling import build_model
from detectron2.utils import comm

from conftest import REPO_ROOT
from tiny_models import tiny_batch, tiny_config

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402
from mask_former.solver import build_optimizer  # noqa: E402

# 4 images of one size, 3 segments each: every worker's half has as many targets, so the
# class loss (a weighted mean over each worker's queries) averages to the whole batch's.
SIZES = ((64, 64),) * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def close_process_group():
    """As train_net's launched_main does: an open Gloo group can abort the worker at exit."""
    if torch.distributed.is_initialized():
        comm.synchronize()
        torch.distributed.destroy_process_group()


def tiny_training_setup():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    model = build_model(cfg)  # FrozenBN + GroupNorm: no statistics over the batch
    return model, build_optimizer(cfg, model)


def training_step(batch, output_path):
    """One optimizer step of the tiny model on this worker's share of `batch`."""
    model, optimizer = tiny_training_setup()
    ddp_model = create_ddp_model(model, broadcast_buffers=False, device_ids=None)  # as train_net's
    share = len(batch) // comm.get_world_size()
    mine = batch[comm.get_rank() * share:(comm.get_rank() + 1) * share]
    loss = sum(ddp_model(mine).values())
    loss.backward()
    optimizer.step()
    if comm.is_main_process():
        torch.save(model.state_dict(), output_path)
    close_process_group()


def test_two_cpu_workers_take_the_same_step_as_one_process(tmp_path):
    batch = tiny_batch(sizes=SIZES)
    launch(training_step, 2, dist_url=f"tcp://127.0.0.1:{free_port()}",
           args=(batch, tmp_path / "two_workers.pth"))
    training_step(batch, tmp_path / "one_process.pth")

    two = torch.load(tmp_path / "two_workers.pth")
    one = torch.load(tmp_path / "one_process.pth")
    initial = tiny_training_setup()[0].state_dict()
    moved = 0
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-5, atol=1e-6, msg=name)
        moved += int(not torch.equal(value, initial[name]))
    assert moved > 100, "the step changed almost no parameter: the comparison proves nothing"


def evaluate(args_list, output_path):
    results = train_net.main(train_net.argument_parser().parse_args(args_list))
    if comm.is_main_process():
        output_path.write_text(json.dumps(results))
    close_process_group()


def test_evaluation_on_two_cpu_workers_matches_one(tmp_path):
    config = REPO_ROOT / "configs/quickstart/maskformer_tiny_shapes.yaml"
    weights = tmp_path / "model.pth"
    cfg = train_net.setup(train_net.argument_parser().parse_args(
        ["--config-file", str(config), "OUTPUT_DIR", str(tmp_path)]))
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    args = ["--config-file", str(config), "--eval-only", "MODEL.WEIGHTS", str(weights),
            "DATALOADER.NUM_WORKERS", "0"]

    launch(evaluate, 2, dist_url=f"tcp://127.0.0.1:{free_port()}",
           args=(args + ["OUTPUT_DIR", str(tmp_path / "two")], tmp_path / "two.json"))
    evaluate(args + ["OUTPUT_DIR", str(tmp_path / "one")], tmp_path / "one.json")

    two = json.loads((tmp_path / "two.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert two["sem_seg"].keys() == one["sem_seg"].keys()
    for task in ("sem_seg", "panoptic_seg"):
        for key, value in one[task].items():
            assert abs(two[task][key] - value) < 1e-6, (task, key, two[task][key], value)
