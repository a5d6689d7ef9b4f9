"""MaskFormer's mask losses and the matcher's pairwise mask costs (ACCELERATION.FUSED_MASK_LOSSES),
and semantic inference's maps (ACCELERATION.COMPILE), as a few fused (compiled) kernels.

Eager, the focal and dice losses run ~40 full-resolution elementwise passes forward and backward
per decoder layer over the upsampled mask logits; compiled, the upsampled logits are never
written to memory and each direction is a few kernels for all layers at once. Likewise the
matching costs' sigmoids, softpluses and powers over every query's mask logits become one pass
before their matrix products. The numbers agree with eager up to float32 rounding
(tests/test_fused_losses.py, tests/test_cuda.py).

The upsampling is written as shifted, weighted sums (`upsample_by_shifts`) rather than
F.interpolate: compiled, F.interpolate's backward scatters every full-resolution gradient into
the low-resolution logits with atomic adds (1.8 of a 31 ms bf16 MaskFormer step on an H200, plus
two kernels recomputing the upsampled logits for it), while the backward of shifted sums is a
gather that fuses with the losses' own gradient.

In semantic inference the upsampling of the mask logits to the input size and their sigmoid
become one kernel that writes the (B, Q, H, W) probabilities once, in the autocast dtype, before
the product with the class probabilities (eager: two passes, with the upsampled logits written
and read in between).
"""
from typing import Callable, Tuple

import torch
import torch._dynamo.exc

from ..modeling.losses import bilinear_upsample, layerwise_mask_losses, upsampled_mask_losses


def _upsample_dim(x: torch.Tensor, dim: int, factor: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of `x` along `dim` by a whole `factor`.

    Output o = factor * i + r samples the input at i + f_r, f_r = (r + 0.5) / factor - 0.5 in
    (-0.5, 0.5): between inputs i - 1 and i where f_r < 0, i and i + 1 otherwise, with the same
    weights for every i. Replicating the first and last inputs once gives the borders, where
    F.interpolate clamps its source index into the input.
    """
    size = x.shape[dim]
    padded = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, size - 1, 1)], dim)
    phases = []
    for r in range(factor):
        offset = (r + 0.5) / factor - 0.5
        lo = 0 if offset < 0 else 1  # where input i - 1 (lo 0) or i (lo 1) starts in `padded`
        weight = offset + 1 if offset < 0 else offset  # of the upper neighbour, as interpolate's
        phases.append((1 - weight) * padded.narrow(dim, lo, size)
                      + weight * padded.narrow(dim, lo + 1, size))
    return torch.stack(phases, dim + 1).flatten(dim, dim + 1)


def upsample_by_shifts(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """`bilinear_upsample` ((N, h, w) -> (N, H, W)), as shifted sums where H and W are whole
    multiples of h and w (MaskFormer's masks: 1/4 of the padded targets); otherwise the same
    F.interpolate. Width first, then height, as F.interpolate's kernels weight them."""
    height, width = size
    h, w = masks.shape[-2:]
    if height % h or width % w:
        return bilinear_upsample(masks, size)
    return _upsample_dim(_upsample_dim(masks, 2, width // w), 1, height // h)


def _fused_mask_losses(pred_masks: torch.Tensor, target_masks: torch.Tensor,
                       num_masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return upsampled_mask_losses(pred_masks, target_masks, num_masks, upsample=upsample_by_shifts)


class _Fused:
    """Calls `fused` compiled for tensors on `device_types`, `eager` for others; a failed
    compilation raises, naming the key that turns it off (`key`).

    count_dims: per argument, its dimension that counts targets or matched masks (None: none).
    That number changes every step, so those dimensions are compiled as dynamic from the first
    call; other sizes (the masks' and crops') are compiled as static, and only as dynamic after
    they change, since indexing code that is generic in every size compiles several times
    slower (the mask losses on an H200: 77 against 12 s to compile).
    """

    key = "ACCELERATION.FUSED_MASK_LOSSES"

    def __init__(self, fused: Callable, eager: Callable, device_types, count_dims):
        self.device_types = tuple(device_types)
        self.eager = eager
        self.count_dims = tuple(count_dims)
        self._compiled = torch.compile(fused)

    def __call__(self, *args):
        if args[0].device.type not in self.device_types:
            return self.eager(*args)
        for arg, dim in zip(args, self.count_dims):
            if dim is not None:
                torch._dynamo.maybe_mark_dynamic(arg, dim % arg.dim())
        try:
            return self._compiled(*args)
        except torch._dynamo.exc.TorchDynamoException as error:
            raise RuntimeError(
                f"Compiling the fused {self.what} failed ({type(error).__name__}: {error}). "
                f"Compute them eagerly: {self.key} False."
            ) from error


class FusedMaskLosses(_Fused):
    """A drop-in for `layerwise_mask_losses`: (L, N, h, w) mask logits, (N, H, W) targets ->
    (L,) focal and (L,) dice losses."""

    what = "mask losses"

    def __init__(self, device_types=("cuda",)):
        # (L, N, h, w) logits and (N, H, W) targets of N matched masks
        super().__init__(_fused_mask_losses, layerwise_mask_losses, device_types, (-3, 0))


class FusedMaskCosts(_Fused):
    """The matcher's pairwise costs `costs` (`pairwise_focal_and_dice_costs`: (N, P) mask
    logits, (M, P) targets -> (N, M) focal and dice costs), compiled."""

    what = "matching costs"

    def __init__(self, costs: Callable, device_types=("cuda",)):
        # (M, P) targets: M, the targets of the batch
        super().__init__(costs, costs, device_types, (None, -2))


class FusedSemanticMaps(_Fused):
    """The model's `semantic_maps` (postprocessing.semantic_maps: (B, Q, K+1) class logits,
    (B, Q, h, w) mask logits, the padded size (H, W) -> (B, K, H, W) scores), compiled."""

    what = "semantic inference"
    key = "ACCELERATION.COMPILE"

    def __init__(self, semantic_maps: Callable, device_types=("cuda",)):
        super().__init__(semantic_maps, semantic_maps, device_types, (None, None, None))
