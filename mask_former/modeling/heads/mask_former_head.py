"""MaskFormer's segmentation head: a pixel decoder plus the transformer predictor."""
import logging
from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..transformer.transformer_predictor import TransformerPredictor
from .pixel_decoder import build_pixel_decoder

logger = logging.getLogger(__name__)

TRANSFORMER_ENCODER = "transformer_encoder"


def move_pixel_decoder_weights(state_dict: dict, prefix: str, keep: tuple = ("predictor.",)) -> None:
    """Moves `prefix + name` to `prefix + "pixel_decoder." + name` in place.

    The official model zoo stores the pixel decoder's parameters directly under the head
    (`sem_seg_head.adapter_1.weight`); here they live under `sem_seg_head.pixel_decoder.`.
    Keys under `keep` (and those already under `pixel_decoder.`) stay where they are.
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
    if name == TRANSFORMER_ENCODER:
        return cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
    if name not in input_shape:
        raise ValueError(
            f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={name!r} is not a feature the backbone "
            f"produces ({sorted(input_shape)}) nor {TRANSFORMER_ENCODER!r}."
        )
    return input_shape[name].channels


def check_encoder_features(pixel_decoder: nn.Module, transformer_in_feature: str) -> None:
    """Fails early when the predictor wants encoder features the pixel decoder never returns.

    Pixel decoders that do not say (`produces_encoder_features`) are checked at run time.
    """
    if (transformer_in_feature == TRANSFORMER_ENCODER
            and getattr(pixel_decoder, "produces_encoder_features", True) is False):
        raise ValueError(
            f"TRANSFORMER_IN_FEATURE={TRANSFORMER_ENCODER!r} needs a pixel decoder that returns "
            f"encoder features, such as TransformerEncoderPixelDecoder; "
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME is {type(pixel_decoder).__name__}."
        )


def run_predictor(pixel_decoder: nn.Module, predictor: nn.Module, transformer_in_feature: str,
                  features: Dict[str, torch.Tensor]) -> dict:
    """Pixel decoder, then the predictor on the configured feature."""
    mask_features, encoder_features = pixel_decoder.forward_features(features)
    if transformer_in_feature == TRANSFORMER_ENCODER:
        if encoder_features is None:
            raise RuntimeError(
                f"TRANSFORMER_IN_FEATURE={TRANSFORMER_ENCODER!r} needs a pixel decoder that returns "
                f"encoder features, such as TransformerEncoderPixelDecoder; "
                f"{type(pixel_decoder).__name__} returned none."
            )
        return predictor(encoder_features, mask_features)
    return predictor(features[transformer_in_feature], mask_features)


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Backbone features -> {"pred_logits" (B, Q, K+1), "pred_masks" (B, Q, H/4, W/4), "aux_outputs"}."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int,
                 pixel_decoder: nn.Module, loss_weight: float = 1.0, ignore_value: int = -1,
                 transformer_predictor: nn.Module, transformer_in_feature: str):
        super().__init__()
        check_encoder_features(pixel_decoder, transformer_in_feature)
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [name for name, _ in ordered]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "transformer_in_feature": cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
            "transformer_predictor": TransformerPredictor(
                cfg, transformer_in_channels(cfg, input_shape), mask_classification=True
            ),
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        move_pixel_decoder_weights(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: Dict[str, torch.Tensor]) -> dict:
        return run_predictor(self.pixel_decoder, self.predictor, self.transformer_in_feature, features)
