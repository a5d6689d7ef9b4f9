"""GPU-only paths against their CPU/eager counterparts. Skipped without CUDA (CI has none);
run on a GPU machine with `python -m pytest tests/test_cuda.py`."""
import logging

import pytest
import torch
from detectron2.modeling import build_model

from helpers import relative_error
from mask_former.modeling.losses import FusedMaskLosses, upsampled_mask_losses
from mask_former.solver import build_optimizer
from tiny_models import tiny_batch, tiny_config

pytestmark = pytest.mark.gpu


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


def test_fused_mask_losses_of_all_layers_at_once_match_per_layer():
    torch.manual_seed(0)
    pred = torch.randn(3, 12, 32, 40, device="cuda", requires_grad=True)
    target = torch.rand(12, 128, 160, device="cuda") > 0.5
    num_masks = torch.tensor(5.0, device="cuda")
    per_layer = [upsampled_mask_losses(p, target, num_masks) for p in pred]
    expected = [torch.stack(losses) for losses in zip(*per_layer)]
    (expected_grad,) = torch.autograd.grad(sum(e.sum() for e in expected), pred)
    fused = FusedMaskLosses()(pred, target, num_masks)
    (fused_grad,) = torch.autograd.grad(sum(f.sum() for f in fused), pred)
    for a, b in zip(fused, expected):
        assert a.shape == (3,)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
    assert relative_error(fused_grad, expected_grad) < 1e-5


def _twin_models(norm="BN", **overrides):
    """An eager model and a CUDA-graph one with the same weights, each with its optimizer.

    SGD, whose update is proportional to the gradient: AdamW's first steps move every weight by
    about the learning rate whatever its gradient's size, so float32 noise in near-zero gradients
    (atomic adds in bilinear upsampling's backward differ run to run) would become
    learning-rate-sized differences between any two runs, graphed or not.
    """
    cfg = tiny_config()
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.MASK_FORMER.TRAIN_CUDA_GRAPH = False
    cfg.MODEL.MASK_FORMER.TEST.CUDA_GRAPH = False
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM = "SGD", 0.01, 0.9
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    torch.manual_seed(0)
    eager = build_model(cfg).train()
    cfg.MODEL.MASK_FORMER.TRAIN_CUDA_GRAPH = True
    graphed = build_model(cfg).train()
    graphed.load_state_dict(eager.state_dict())
    return (eager, build_optimizer(cfg, eager)), (graphed, build_optimizer(cfg, graphed))


def _train_step(model, optimizer, batch, autocast_dtype=None):
    with torch.autocast("cuda", dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        losses = model(batch)
    total = sum(losses.values())
    optimizer.zero_grad()
    total.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    optimizer.step()
    return total.detach(), grads


def assert_gradients_close(actual, expected, tolerance=2e-3):
    """Gradients (or tensors updated from them) equal up to float32 noise. Bilinear upsampling's backward adds with atomics, so
    two eager steps from the same parameters differ too: on an H100, by 2.4e-4 over the whole
    gradient, and by O(1) relative on tensors whose gradient is near zero (norm 1e-7 to 1e-11);
    graphed steps differed from eager ones no more than that. A wrong replay (stale inputs,
    reused buffers) is off by O(1) over the whole gradient."""
    assert len(actual) == len(expected)
    actual, expected = [a.double() for a in actual], [b.double() for b in expected]
    total = torch.cat([g.flatten() for g in expected]).norm()
    assert relative_error(torch.cat([g.flatten() for g in actual]),
                          torch.cat([g.flatten() for g in expected])) < tolerance
    for a, b in zip(actual, expected):
        assert (a - b).norm() <= tolerance / 2 * total


@pytest.fixture
def deterministic_cudnn():
    """Deterministic float32 convolutions: TF32 (PyTorch's default for cuDNN) rounds at ~1e-3,
    and a graph's recording may pick another algorithm than eager mode."""
    previous = torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = previous


def test_graphed_training_steps_match_eager(deterministic_cudnn):
    (eager, eager_opt), (graphed, graphed_opt) = _twin_models(norm="FrozenBN")
    batches = [tiny_batch(sizes=((96, 96), (96, 96)), seed=seed) for seed in range(4)]
    for batch in batches:
        eager_loss, eager_grads = _train_step(eager, eager_opt, batch)
        graphed_loss, graphed_grads = _train_step(graphed, graphed_opt, batch)
        assert relative_error(graphed_loss, eager_loss) < 1e-5
        assert_gradients_close(graphed_grads, eager_grads)
        # after the optimizer step (SGD: the noise stays a learning rate times as small)
        assert_gradients_close(list(graphed.state_dict().values()), list(eager.state_dict().values()),
                               tolerance=1e-5)
        # Next step from the same parameters, or momentum compounds the noise step after step.
        # The copy is in place, so the recorded graphs must see it.
        graphed.load_state_dict(eager.state_dict())
    assert graphed.training_graphs.disabled is None
    assert len(graphed.training_graphs.graphs) == 1  # recorded once, replayed after


def test_graphed_training_updates_batchnorm_statistics_like_eager(deterministic_cudnn):
    (eager, eager_opt), (graphed, graphed_opt) = _twin_models(norm="BN")
    batch = tiny_batch(sizes=((96, 96), (96, 96)))
    eager_loss, _ = _train_step(eager, eager_opt, batch)
    graphed_loss, _ = _train_step(graphed, graphed_opt, batch)
    assert relative_error(graphed_loss, eager_loss) < 1e-5
    assert graphed.training_graphs.graphs
    buffers = dict(eager.named_buffers())
    for name, value in graphed.named_buffers():
        # one update each: the recording's warm-up passes are undone
        assert relative_error(value.double(), buffers[name].double()) < 1e-5, name


def test_graphed_training_accumulates_gradients_like_eager(deterministic_cudnn):
    (eager, _), (graphed, _) = _twin_models(norm="FrozenBN")
    for model in (eager, graphed):
        for seed in range(3):  # no zero_grad in between: gradients add up
            sum(model(tiny_batch(sizes=((64, 64), (64, 64)), seed=seed)).values()).backward()
    assert graphed.training_graphs.graphs
    assert_gradients_close([p.grad for p in graphed.parameters()], [p.grad for p in eager.parameters()])


def test_graphed_training_in_bf16_matches_eager_bf16(deterministic_cudnn):
    (eager, eager_opt), (graphed, graphed_opt) = _twin_models(norm="FrozenBN")
    batch = tiny_batch(sizes=((64, 64), (64, 64)))
    for _ in range(2):
        eager_loss, _ = _train_step(eager, eager_opt, batch, torch.bfloat16)
        graphed_loss, _ = _train_step(graphed, graphed_opt, batch, torch.bfloat16)
        assert relative_error(graphed_loss, eager_loss) < 1e-3
    assert len(graphed.training_graphs.graphs) == 1


def test_training_graphs_beyond_max_shapes_run_eagerly(caplog, deterministic_cudnn):
    (eager, eager_opt), (graphed, graphed_opt) = _twin_models(
        norm="FrozenBN", **{"MODEL.MASK_FORMER.CUDA_GRAPH_MAX_SHAPES": "1"})
    with caplog.at_level(logging.WARNING):
        for sizes in (((64, 64), (64, 64)), ((96, 64), (96, 64)), ((64, 64), (64, 64))):
            eager_loss, _ = _train_step(eager, eager_opt, tiny_batch(sizes=sizes))
            graphed_loss, _ = _train_step(graphed, graphed_opt, tiny_batch(sizes=sizes))
            assert relative_error(graphed_loss, eager_loss) < 1e-4
    assert len(graphed.training_graphs.graphs) == 1
    assert "run eagerly" in caplog.text


def test_pin_batch_pins_what_the_model_copies():
    from mask_former.data import pin_batch

    batch = tiny_batch()
    pin_batch(batch)
    for item in batch:
        assert item["image"].is_pinned()
        assert item["instances"].gt_masks.is_pinned() and item["instances"].gt_classes.is_pinned()


def test_pinned_copies_to_the_gpu_equal_plain_copies():
    cfg = tiny_config()
    cfg.MODEL.DEVICE = "cuda"
    model = build_model(cfg)
    tensors = [torch.randint(0, 255, (3, 40, 48), dtype=torch.uint8).pin_memory(),
               (torch.rand(5, 40, 48) > 0.5).pin_memory(), torch.arange(3), torch.rand(2, 8, 8),
               torch.rand(8, 6).t(), torch.rand(3, device="cuda")]
    expected = [t.clone() for t in tensors]
    moved = model.to_device(tensors)
    for tensor in tensors[2:5]:  # pageable sources, staged through pinned memory: free to change
        tensor.zero_()
    for before, on_gpu in zip(expected, moved):
        assert on_gpu.device.type == "cuda"
        assert torch.equal(on_gpu.cpu(), before.cpu())


def test_cuda_graph_inference_matches_eager():
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.MASK_FORMER.TEST.CUDA_GRAPH = False
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
    cfg.MODEL.MASK_FORMER.TRAIN_CUDA_GRAPH = False
    eager = build_model(cfg).train()
    cfg.MODEL.MASK_FORMER.COMPILE = True
    compiled = build_model(cfg).train()
    compiled.load_state_dict(eager.state_dict())
    batch = tiny_batch()
    eager_losses = eager(batch)
    compiled_losses = compiled(batch)
    for name, value in eager_losses.items():
        assert relative_error(compiled_losses[name], value) < 1e-3, name
