"""MaskFormer's segmentation head: a pixel decoder, then a transformer decoder on the feature
MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE names (Mask2Former's head is the same)."""
import logging
from typing import Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..pixel_decoder import build_pixel_decoder
from ..transformer_decoder import build_transformer_decoder

logger = logging.getLogger(__name__)

# TRANSFORMER_IN_FEATURE values other than a backbone feature name:
TRANSFORMER_ENCODER = "transformer_encoder"  # the pixel decoder's encoder output (MaskFormer)
MULTI_SCALE = "multi_scale_pixel_decoder"  # the pixel decoder's multi-scale maps (Mask2Former)
PIXEL_EMBEDDING = "pixel_embedding"  # the mask features themselves


def move_pixel_decoder_weights(state_dict: dict, prefix: str, keep: tuple = ("predictor.",)) -> None:
    """Moves `prefix + name` to `prefix + "pixel_decoder." + name` in place.

    The official MaskFormer model zoo stores the pixel decoder's parameters directly under the
    head (`sem_seg_head.adapter_1.weight`); here, as in Mask2Former's checkpoints, they live under
    `sem_seg_head.pixel_decoder.`. Keys under `keep` (and those already under `pixel_decoder.`)
    stay where they are.
    """
    stay = tuple(prefix + k for k in keep + ("pixel_decoder.",))
    moved = 0
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(stay)]:
        state_dict[prefix + "pixel_decoder." + key[len(prefix):]] = state_dict.pop(key)
        moved += 1
    if moved:
        logger.info(f"Moved {moved} official-format pixel decoder weights under {prefix}pixel_decoder.")


def transformer_in_channels(cfg, input_shape: Dict[str, ShapeSpec]) -> int:
    """Channels of the feature the transformer decoder reads, checked against the backbone."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
    if name in (TRANSFORMER_ENCODER, MULTI_SCALE):
        return cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
    if name == PIXEL_EMBEDDING:
        return cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
    if name not in input_shape:
        raise ValueError(
            f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={name!r} is not a feature the backbone "
            f"produces ({sorted(input_shape)}) nor one of {TRANSFORMER_ENCODER!r}, "
            f"{MULTI_SCALE!r}, {PIXEL_EMBEDDING!r}."
        )
    return input_shape[name].channels


def check_encoder_features(pixel_decoder: nn.Module, transformer_in_feature: str) -> None:
    """Fails early when the decoder wants encoder features the pixel decoder never returns.

    Pixel decoders that do not say (`produces_encoder_features`) are checked at run time.
    """
    if (transformer_in_feature == TRANSFORMER_ENCODER
            and getattr(pixel_decoder, "produces_encoder_features", True) is False):
        raise ValueError(
            f"TRANSFORMER_IN_FEATURE={TRANSFORMER_ENCODER!r} needs a pixel decoder that returns "
            f"encoder features, such as TransformerEncoderPixelDecoder; "
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME is {type(pixel_decoder).__name__}."
        )


def run_transformer_decoder(pixel_decoder: nn.Module, predictor: nn.Module,
                            transformer_in_feature: str, features: Dict[str, torch.Tensor],
                            mask: Optional[torch.Tensor] = None) -> dict:
    """The pixel decoder, then the transformer decoder on the configured feature."""
    outputs = pixel_decoder.forward_features(features)
    if len(outputs) == 2:  # a pixel decoder written for the official MaskFormer
        (mask_features, encoder_features), multi_scale_features = outputs, None
    else:
        mask_features, encoder_features, multi_scale_features = outputs
    if transformer_in_feature == MULTI_SCALE:
        x = multi_scale_features
    elif transformer_in_feature == TRANSFORMER_ENCODER:
        x = encoder_features
    elif transformer_in_feature == PIXEL_EMBEDDING:
        x = mask_features
    else:
        x = features[transformer_in_feature]
    if x is None:
        raise RuntimeError(
            f"TRANSFORMER_IN_FEATURE={transformer_in_feature!r}: "
            f"{type(pixel_decoder).__name__}.forward_features returned no such features; use a "
            f"pixel decoder that does (TransformerEncoderPixelDecoder for {TRANSFORMER_ENCODER!r}, "
            f"MSDeformAttnPixelDecoder or BasePixelDecoder for {MULTI_SCALE!r})."
        )
    return predictor(x, mask_features, mask)


class PixelDecoderHead(nn.Module):
    """What the heads share: a pixel decoder under `pixel_decoder.`, the number of classes, and
    the loading of official-format checkpoints (see `move_pixel_decoder_weights`)."""

    def __init__(self, *, num_classes: int, pixel_decoder: nn.Module):
        super().__init__()
        self.num_classes = num_classes
        self.pixel_decoder = pixel_decoder

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        move_pixel_decoder_weights(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(PixelDecoderHead):
    """Backbone features -> {"pred_logits" (B, Q, K+1), "pred_masks" (B, Q, H/4, W/4), "aux_outputs"}."""

    @configurable
    def __init__(self, *, num_classes: int, pixel_decoder: nn.Module,
                 transformer_predictor: nn.Module, transformer_in_feature: str):
        """
        Args:
            num_classes: K, without "no object".
            pixel_decoder: a module with `forward_features` (see pixel_decoder/build.py).
            transformer_predictor: the transformer decoder, called as (x, mask_features, mask).
            transformer_in_feature: what it reads: a backbone feature name, "transformer_encoder",
                "multi_scale_pixel_decoder" or "pixel_embedding".
        """
        super().__init__(num_classes=num_classes, pixel_decoder=pixel_decoder)
        check_encoder_features(pixel_decoder, transformer_in_feature)
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["transformer_in_feature"] = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        ret["transformer_predictor"] = build_transformer_decoder(
            cfg, transformer_in_channels(cfg, input_shape), mask_classification=True)
        return ret

    def forward(self, features: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None) -> dict:
        """features: the backbone's {name: (B, C, H/s, W/s)}; mask: (B, H/32, W/32) padding or None."""
        return run_transformer_decoder(self.pixel_decoder, self.predictor,
                                       self.transformer_in_feature, features, mask)
