"""GPU-only paths against their CPU/eager counterparts. Skipped without CUDA (CI has none);
run on a GPU machine with `python -m pytest tests/test_cuda.py`."""
import pytest
import torch
from detectron2.modeling import build_model

from helpers import relative_error
from mask_former.modeling.losses import FusedMaskLosses, upsampled_mask_losses
from tiny_models import tiny_batch, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_fused_mask_losses_on_gpu_match_eager():
    torch.manual_seed(0)
    pred = torch.randn(12, 32, 40, device="cuda", requires_grad=True)
    target = torch.rand(12, 128, 160, device="cuda") > 0.5
    num_masks = torch.tensor(5.0, device="cuda")
    eager = upsampled_mask_losses(pred, target, num_masks)
    (eager_grad,) = torch.autograd.grad(sum(eager), pred)
    fused = FusedMaskLosses()(pred, target, num_masks)
    (fused_grad,) = torch.autograd.grad(sum(fused), pred)
    for a, b in zip(fused, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
    assert relative_error(fused_grad, eager_grad) < 1e-5


def test_cuda_graph_inference_matches_eager():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.MODEL.DEVICE = "cuda"
    model = build_model(cfg).eval()
    cfg.MODEL.MASK_FORMER.TEST.CUDA_GRAPH = True
    graphed = build_model(cfg).eval()
    graphed.load_state_dict(model.state_dict())
    batch = tiny_batch(sizes=((64, 96), (64, 96)))
    with torch.no_grad():
        expected = model(batch)
        for _ in range(3):  # records once, then replays
            results = graphed(batch)
    assert len(graphed.graphed_network.graphs) == 1
    for result, reference in zip(results, expected):
        assert relative_error(result["sem_seg"], reference["sem_seg"]) < 1e-5


def test_training_step_on_gpu_runs_without_host_sync_errors():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.MODEL.DEVICE = "cuda"
    model = build_model(cfg).train()
    losses = model(tiny_batch())
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_compiled_network_trains_like_eager():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.MODEL.DEVICE = "cuda"
    eager = build_model(cfg).train()
    cfg.MODEL.MASK_FORMER.COMPILE = True
    compiled = build_model(cfg).train()
    compiled.load_state_dict(eager.state_dict())
    batch = tiny_batch()
    eager_losses = eager(batch)
    compiled_losses = compiled(batch)
    for name, value in eager_losses.items():
        assert relative_error(compiled_losses[name], value) < 1e-3, name
