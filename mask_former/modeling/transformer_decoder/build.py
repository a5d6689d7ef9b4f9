"""The transformer-decoder registry and its builder.

A transformer decoder turns N learned queries into N segment embeddings. Built by
`build_transformer_decoder(cfg, in_channels, mask_classification)` from
`cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME`, called as `cls(cfg, in_channels,
mask_classification)`, as in the official Mask2Former; it is called as
`decoder(x, mask_features, mask=None)` where `x` is the feature the head routes to it
(MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE: one (B, C, h, w) map, or a list of them for
"multi_scale_pixel_decoder") and `mask_features` is (B, MASK_DIM, H/4, W/4). It returns
{"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H/4, W/4), "aux_outputs": [dict per earlier
layer]}.
"""
from detectron2.utils.registry import Registry
from torch import nn

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for transformer decoders (MaskFormer's TransformerPredictor, Mask2Former's
MultiScaleMaskedTransformerDecoder), named by MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """Builds the transformer decoder named by `cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME`."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODER_REGISTRY:
        known = sorted(n for n, _ in TRANSFORMER_DECODER_REGISTRY)
        raise KeyError(
            f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME={name!r} is not registered. Register it "
            f"with @TRANSFORMER_DECODER_REGISTRY.register() (mask_former.modeling). Registered "
            f"transformer decoders: {known}"
        )
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)
