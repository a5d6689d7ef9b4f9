"""Per-pixel classification baselines of the MaskFormer paper, for detectron2's SemanticSegmentor.

`PerPixelBaselineHead`: pixel decoder + 1x1 classifier. `PerPixelBaselinePlusHead`: the same
pixel decoder and transformer decoder as MaskFormer, with one query per class whose mask logits
are the class scores (no mask classification).
"""
from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..transformer_decoder import TransformerPredictor
from .mask_former_head import (
    PixelDecoderHead,
    check_encoder_features,
    run_transformer_decoder,
    transformer_in_channels,
)

# The pixel decoder's output stride: the logits are upsampled by this to the input size.
COMMON_STRIDE = 4


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselineHead(PixelDecoderHead):
    """Per-pixel K-way classification: features -> logits (B, K, H/4, W/4), upsampled x4."""

    @configurable
    def __init__(self, *, num_classes: int, pixel_decoder: nn.Module, loss_weight: float = 1.0,
                 ignore_value: int = -1):
        super().__init__(num_classes=num_classes, pixel_decoder=pixel_decoder)
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.predictor = Conv2d(pixel_decoder.mask_dim, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["ignore_value"] = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        ret["loss_weight"] = cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT
        return ret

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        """targets: (B, H, W) class ids. Returns (logits (B, K, H, W) or None, losses)."""
        logits = self.layers(features)
        if self.training:
            return None, self.losses(logits, targets)
        return self._upsample(logits), {}

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        mask_features = self.pixel_decoder.forward_features(features)[0]
        return self.predictor(mask_features)

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, scale_factor=COMMON_STRIDE, mode="bilinear",
                             align_corners=False)

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        logits = self._upsample(predictions.float())
        loss = F.cross_entropy(logits, targets, reduction="mean", ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselinePlusHead(PerPixelBaselineHead):
    """The per-pixel baseline with MaskFormer's transformer decoder (NUM_OBJECT_QUERIES = K)."""

    @configurable
    def __init__(self, *, transformer_in_feature: str, transformer_predictor: nn.Module,
                 deep_supervision: bool, num_classes: int, pixel_decoder: nn.Module,
                 loss_weight: float = 1.0, ignore_value: int = -1):
        super().__init__(num_classes=num_classes, pixel_decoder=pixel_decoder,
                         loss_weight=loss_weight, ignore_value=ignore_value)
        check_encoder_features(pixel_decoder, transformer_in_feature)
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.deep_supervision = deep_supervision

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["transformer_in_feature"] = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        ret["transformer_predictor"] = TransformerPredictor(
            cfg, transformer_in_channels(cfg, input_shape), mask_classification=False
        )
        ret["deep_supervision"] = cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION
        return ret

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        outputs = run_transformer_decoder(self.pixel_decoder, self.predictor,
                                          self.transformer_in_feature, features)
        if not self.training:
            return self._upsample(outputs["pred_masks"]), {}
        losses = self.losses(outputs["pred_masks"], targets)
        if self.deep_supervision:
            for i, aux in enumerate(outputs["aux_outputs"]):
                losses[f"loss_sem_seg_{i}"] = self.losses(aux["pred_masks"], targets)["loss_sem_seg"]
        return None, losses
