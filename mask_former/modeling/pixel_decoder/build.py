"""The pixel-decoder registry and its builder.

A pixel decoder takes the backbone's features and returns per-pixel embeddings through
`forward_features(features) -> (mask_features, encoder_features, multi_scale_features)`:
  - mask_features: (B, MASK_DIM, H/4, W/4), the embeddings whose dot product with each query's
    mask embedding is its mask;
  - encoder_features: (B, C, H/32, W/32), a transformer encoder's output (MaskFormer's
    TRANSFORMER_IN_FEATURE "transformer_encoder"), or None;
  - multi_scale_features: a list of (B, C, H/s, W/s) maps, coarsest first, that a multi-scale
    transformer decoder reads (Mask2Former's "multi_scale_pixel_decoder"), or None.
Pixel decoders written for the official MaskFormer return only the first two; they work as well.
"""
from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.utils.registry import Registry
from torch import nn

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """
Registry for pixel decoders: modules that take the backbone's features and return per-pixel
embeddings through `forward_features`. Built by `build_pixel_decoder(cfg, input_shape)` from
`cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`, called as `cls(cfg, input_shape)`.
"""


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Builds the pixel decoder named by `cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`.

    The name is looked up in PIXEL_DECODER_REGISTRY first, then in detectron2's
    SEM_SEG_HEADS_REGISTRY, where the official MaskFormer and Mask2Former and their downstream
    projects register theirs.
    """
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name in PIXEL_DECODER_REGISTRY:
        decoder_cls = PIXEL_DECODER_REGISTRY.get(name)
    elif name in SEM_SEG_HEADS_REGISTRY:
        decoder_cls = SEM_SEG_HEADS_REGISTRY.get(name)
    else:
        known = sorted(n for n, _ in PIXEL_DECODER_REGISTRY)
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not registered. Register it with "
            f"@PIXEL_DECODER_REGISTRY.register() (mask_former.modeling) or "
            f"@SEM_SEG_HEADS_REGISTRY.register(). Registered pixel decoders: {known}"
        )
    decoder = decoder_cls(cfg, input_shape)
    if not callable(getattr(decoder, "forward_features", None)):
        raise TypeError(
            f"Pixel decoder {name!r} ({decoder_cls.__qualname__}) has no `forward_features` method; "
            "MaskFormer needs forward_features(features) -> (mask_features, encoder_features, "
            "multi_scale_features)."
        )
    return decoder


def select_in_features(cfg, input_shape: Dict[str, ShapeSpec]) -> Dict[str, ShapeSpec]:
    """The backbone features named in MODEL.SEM_SEG_HEAD.IN_FEATURES, checked to exist."""
    wanted = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
    missing = [f for f in wanted if f not in input_shape]
    if missing:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.IN_FEATURES names {missing}, which the backbone does not produce; "
            f"it produces {sorted(input_shape)}."
        )
    return {k: v for k, v in input_shape.items() if k in wanted}
