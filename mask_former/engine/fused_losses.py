"""MaskFormer's mask losses of all decoder layers as a couple of fused (compiled) kernels.

Eager, the focal and dice losses run ~40 full-resolution elementwise passes forward and backward
per decoder layer over the upsampled mask logits; compiled, the upsampled logits are never
written to memory and each direction is a couple of kernels for all layers at once. The numbers
agree with eager up to float32 rounding (tests/test_cuda.py).
"""
from typing import Tuple

import torch
import torch._dynamo.exc

from ..modeling.losses import layerwise_mask_losses, upsampled_mask_losses

CONFIG_KEY = "ACCELERATION.FUSED_MASK_LOSSES"


class FusedMaskLosses:
    """A drop-in for `layerwise_mask_losses`: (L, N, h, w) mask logits, (N, H, W) targets ->
    (L,) focal and (L,) dice losses, compiled for tensors on `device_types` (the eager function
    runs on others)."""

    def __init__(self, device_types=("cuda",)):
        self.device_types = tuple(device_types)
        # dynamic: the number of matched masks changes every step
        self._compiled = torch.compile(upsampled_mask_losses, dynamic=True)

    def __call__(self, pred_masks: torch.Tensor, target_masks: torch.Tensor,
                 num_masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if pred_masks.device.type not in self.device_types:
            return layerwise_mask_losses(pred_masks, target_masks, num_masks)
        try:
            return self._compiled(pred_masks, target_masks, num_masks)
        except torch._dynamo.exc.TorchDynamoException as error:
            raise RuntimeError(
                f"Compiling the fused mask losses failed ({type(error).__name__}: {error}). "
                f"Compute them eagerly: {CONFIG_KEY} False."
            ) from error
