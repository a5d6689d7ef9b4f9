"""ACCELERATION.COMPILE: the compiled network's compile workers stop one call after each new
compiled variant (input shape, dtype, autocast state, training or not), so that their start-up
does not take the host's cores from the steps that follow. Checked on the CPU with torch.compile
stood in by the identity, and on a GPU with inductor's own worker pool."""
import importlib

import pytest
import torch
from detectron2.modeling import build_model

from mask_former.engine import AcceleratedMaskFormer
from tiny_models import tiny_config

# The module (mask_former.engine.accelerate is also the name of its function).
accelerate_module = importlib.import_module("mask_former.engine.accelerate")


def _releases(monkeypatch) -> list:
    calls = []
    release = accelerate_module.release_compile_workers
    monkeypatch.setattr(accelerate_module, "release_compile_workers",
                        lambda: calls.append(1) or release())
    return calls


def _compiled(device: str) -> AcceleratedMaskFormer:
    cfg = tiny_config()
    cfg.MODEL.DEVICE = device
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return AcceleratedMaskFormer(model, train_cuda_graph=False, test_cuda_graph=False,
                                 max_shapes=2, compile_network=True)


@torch.no_grad()
def test_workers_stop_one_call_after_each_new_variant(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn: fn)
    calls = _releases(monkeypatch)
    fast = _compiled("cpu")
    small, large = torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 96, 64)
    counts = []
    for images in (small, small, small, large, large, small):
        fast.network(images)
        counts.append(len(calls))
    # A new variant (the first small, the large) releases the workers at the call after it.
    assert counts == [0, 1, 1, 1, 2, 2]
    fast.train()
    fast.network(small)  # the same shape in training is another variant (forward and backward)
    fast.network(small)
    assert len(calls) == 3


@torch.no_grad()
def test_an_uncompiled_network_leaves_the_workers_alone(monkeypatch):
    calls = _releases(monkeypatch)
    model = build_model(tiny_config()).eval()
    fast = AcceleratedMaskFormer(model, train_cuda_graph=False, test_cuda_graph=False,
                                 max_shapes=2, compile_network=False)
    for _ in range(3):
        fast.network(torch.zeros(1, 3, 64, 64))
    assert calls == []


@pytest.mark.gpu
@torch.no_grad()
def test_on_a_gpu_no_compile_worker_pool_is_left_after_the_call_after_compiling(monkeypatch):
    from torch._inductor import async_compile

    calls = _releases(monkeypatch)
    fast = _compiled("cuda")
    images = torch.zeros(1, 3, 64, 64, device="cuda")
    expected = fast.model.network(images)["pred_masks"]
    compiled = fast.network(images)["pred_masks"]
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-4)
    fast.network(images)
    assert len(calls) == 1
    assert len(async_compile._pool_set) == 0
