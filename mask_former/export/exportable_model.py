"""MaskFormer's semantic inference on one image as one graph that exports (ONNX, TorchScript).

The eager model's `forward` takes detectron2's list of dicts and returns per-image Python
structures; an exported graph needs one tensor in and tensors out. `ExportableMaskFormer` wraps
the trained model's own pieces, in the eager model's order: normalisation with PIXEL_MEAN/STD,
zero padding to the size divisibility, backbone + head (`MaskFormer.network`), upsampling of the
mask logits to the padded size, the crop back to the input size and semantic marginalisation
(`postprocessing.semantic_inference`). The fast paths of mask_former/engine are not used.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.postprocessing import semantic_inference

INPUT_NAME = "image"
OUTPUT_NAMES = ("pred_logits", "pred_masks", "sem_seg")


class ExportableMaskFormer(nn.Module):
    """(1, 3, H, W) image -> pred_logits (1, Q, K+1), pred_masks (1, Q, H_pad/4, W_pad/4),
    sem_seg (1, K, H, W).

    The image is what the eager model receives as its "image": float values in 0-255, channels
    in the config's INPUT.FORMAT, already resized (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST). H_pad and
    W_pad are H and W rounded up to the size divisibility. sem_seg equals the eager model's
    "sem_seg" for an input whose "height" and "width" are its own size.
    """

    def __init__(self, *, backbone: nn.Module, sem_seg_head: nn.Module, pixel_mean: torch.Tensor,
                 pixel_std: torch.Tensor, size_divisibility: int):
        """
        Args:
            backbone, sem_seg_head: the trained model's (see `from_model`).
            pixel_mean, pixel_std: (C, 1, 1) normalisation, in the input's channel order.
            size_divisibility: pad to a multiple of this (the model's resolved value, >= 1).
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.register_buffer("pixel_mean", pixel_mean.detach().clone(), persistent=False)
        self.register_buffer("pixel_std", pixel_std.detach().clone(), persistent=False)
        self.size_divisibility = max(int(size_divisibility), 1)

    @classmethod
    def from_model(cls, model: nn.Module) -> "ExportableMaskFormer":
        """Wraps a built `MaskFormer` (weights loaded), in eval mode. Only its parts are held,
        not the meta-architecture, whose training-time attributes tracing has no use for."""
        model.eval()
        return cls(backbone=model.backbone, sem_seg_head=model.sem_seg_head,
                   pixel_mean=model.pixel_mean, pixel_std=model.pixel_std,
                   size_divisibility=model.size_divisibility).eval()

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        d = self.size_divisibility
        # Integer arithmetic and unconditional pads and crops (no-ops where nothing is padded):
        # an export records them for symbolic sizes, so one graph serves every input size.
        padded_height = (height + d - 1) // d * d
        padded_width = (width + d - 1) // d * d
        x = (image - self.pixel_mean) / self.pixel_std
        x = F.pad(x, (0, padded_width - width, 0, padded_height - height))  # zeros, as ImageList
        outputs = self.sem_seg_head(self.backbone(x))
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        masks = F.interpolate(pred_masks, size=(padded_height, padded_width), mode="bilinear",
                              align_corners=False)
        masks = masks.narrow(2, 0, height).narrow(3, 0, width)
        return pred_logits, pred_masks, semantic_inference(pred_logits, masks)
