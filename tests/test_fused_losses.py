"""The compiled (fused) mask losses give the eager losses and gradients, and the compiled
semantic maps the eager maps.

On GPUs the acceleration step compiles them with Triton; these tests compile the same functions
for the CPU, which exercises the same graph capture, decompositions (bilinear upsampling
included) and dynamic shapes.
"""
import pytest
import torch
import torch._dynamo.exc

from mask_former.engine import FusedMaskCosts, FusedMaskLosses, FusedSemanticMaps
from mask_former.engine.fused_losses import _fused_mask_losses, upsample_by_shifts
from mask_former.modeling.losses import (bilinear_upsample, pairwise_focal_and_dice_costs,
                                         upsampled_mask_losses)
from mask_former.modeling.postprocessing import semantic_maps


def test_fused_mask_losses_match_eager_values_and_gradients():
    torch.manual_seed(0)
    fused = FusedMaskLosses(device_types=("cpu",))
    # a new number of matched masks each step must not need a new compilation
    for num_pairs in (7, 5, 9):
        pred = torch.randn(num_pairs, 16, 24, requires_grad=True)
        target = torch.rand(num_pairs, 64, 96) > 0.5
        num_masks = torch.tensor(3.0)
        eager = upsampled_mask_losses(pred, target, num_masks)
        (eager_grad,) = torch.autograd.grad(20 * eager[0] + eager[1], pred)
        compiled = fused(pred, target, num_masks)
        (compiled_grad,) = torch.autograd.grad(20 * compiled[0] + compiled[1], pred)
        for a, b in zip(compiled, eager):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-5, atol=1e-8)
        assert "Compiled" in type(compiled[0].grad_fn).__name__


def test_a_failed_compilation_names_the_key_that_turns_it_off(monkeypatch):
    fused = FusedMaskLosses(device_types=("cpu",))

    def failing(*args):
        raise torch._dynamo.exc.TorchRuntimeError("no C++ compiler")

    monkeypatch.setattr(fused, "_compiled", failing)
    pred, target = torch.randn(2, 4, 4), torch.rand(2, 8, 8) > 0.5
    with pytest.raises(RuntimeError, match="ACCELERATION.FUSED_MASK_LOSSES False"):
        fused(pred, target, torch.tensor(1.0))


@pytest.mark.parametrize("size, out", [((16, 24), (64, 96)), ((5, 7), (10, 21)), ((8, 8), (8, 8)),
                                       ((1, 3), (4, 12)), ((16, 24), (60, 96))])
def test_upsampling_by_shifts_is_bilinear_interpolation(size, out):
    """Whole factors (4x as in MaskFormer, 1x, 2x by 3x, a single row) by shifted sums, others
    (60 / 16) by F.interpolate: values and gradients as F.interpolate's, in float64."""
    torch.manual_seed(0)
    masks = torch.randn(3, *size, dtype=torch.float64, requires_grad=True)
    expected = bilinear_upsample(masks, out)
    shifted = upsample_by_shifts(masks, out)
    assert shifted.shape == (3, *out)
    torch.testing.assert_close(shifted, expected, rtol=0, atol=1e-14)
    grad_out = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, masks, grad_out)
    (shifted_grad,) = torch.autograd.grad(shifted, masks, grad_out)
    torch.testing.assert_close(shifted_grad, expected_grad, rtol=0, atol=1e-13)


def _backward_ops(fn) -> set:
    """The aten operators of `fn`'s compiled backward graph (4 layers, 5 masks, 4x upsampling)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    ops = set()

    def keep_backward(graph, inputs):
        ops.update(str(node.target) for node in graph.graph.nodes if node.op == "call_function")
        return make_boxed_func(graph.forward)

    torch._dynamo.reset()
    def forward_as_is(graph, inputs):
        return make_boxed_func(graph.forward)

    compiled = torch.compile(fn, dynamic=True, backend=aot_autograd(fw_compiler=forward_as_is,
                                                                   bw_compiler=keep_backward))
    pred = torch.randn(4, 5, 16, 24, requires_grad=True)
    focal, dice = compiled(pred, torch.rand(5, 64, 96) > 0.5, torch.tensor(2.0))
    (focal.sum() + dice.sum()).backward()
    return ops


def test_the_fused_losses_backward_scatters_nothing():
    """Compiled, F.interpolate's backward scatters the full-resolution gradient with atomic adds
    (an index_put); the fused losses' upsampling backward is gathers only."""
    assert "aten._unsafe_index_put.default" in _backward_ops(upsampled_mask_losses)
    ops = _backward_ops(_fused_mask_losses)
    assert not [op for op in ops if "index_put" in op or "scatter" in op], sorted(ops)


def test_fused_matching_costs_match_eager():
    """The matcher's pairwise costs compiled, for a new number of targets each step without a
    new compilation; on other devices, the eager costs themselves."""
    torch.manual_seed(0)
    costs = pairwise_focal_and_dice_costs
    fused = FusedMaskCosts(costs, device_types=("cpu",))
    for num_targets in (4, 2, 6):
        pred = torch.randn(10, 96)
        target = (torch.rand(num_targets, 96) > 0.5).float()
        expected = costs(pred, target)
        compiled = fused(pred, target)
        for a, b in zip(compiled, expected):
            assert a.shape == (10, num_targets)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(FusedMaskCosts(costs)(pred, target), expected):
        assert torch.equal(a, b)


def test_fused_semantic_maps_match_eager():
    """Semantic inference's maps compiled (ACCELERATION.COMPILE) equal the eager maps, for a
    smaller last batch and another padded size too; a failed compilation names COMPILE."""
    torch.manual_seed(0)
    fused = FusedSemanticMaps(semantic_maps, device_types=("cpu",))
    for batch, (h, w) in ((3, (8, 11)), (2, (8, 11)), (3, (6, 9))):
        mask_cls, mask_pred = torch.randn(batch, 10, 6), torch.randn(batch, 10, h, w)
        size = (4 * h, 4 * w)
        expected = semantic_maps(mask_cls, mask_pred, size)
        assert expected.shape == (batch, 5, *size)
        torch.testing.assert_close(fused(mask_cls, mask_pred, size), expected, rtol=1e-5,
                                   atol=1e-6)

    def failing(*args):
        raise torch._dynamo.exc.TorchRuntimeError("no C++ compiler")

    fused._compiled = failing
    with pytest.raises(RuntimeError, match="ACCELERATION.COMPILE False"):
        fused(mask_cls, mask_pred, size)
