"""The compiled (fused) mask losses give the eager losses and gradients.

On GPUs the acceleration step compiles them with Triton; this test compiles the same function for the CPU,
which exercises the same graph capture, decompositions (bilinear upsampling included) and
dynamic shapes.
"""
import pytest
import torch
import torch._dynamo.exc

from mask_former.engine import FusedMaskLosses
from mask_former.modeling.losses import upsampled_mask_losses


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
