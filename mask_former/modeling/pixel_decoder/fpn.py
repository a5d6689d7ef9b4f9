"""MaskFormer's pixel decoders: an FPN (BasePixelDecoder), optionally with a transformer
encoder on its coarsest feature (TransformerEncoderPixelDecoder).

`forward_features(features)` returns (mask_features (B, mask_dim, H/4, W/4), the encoder's output
(B, conv_dim, H/32, W/32) or None, and the FPN's three coarsest outputs, coarsest first, for a
multi-scale transformer decoder); see `build.py`.
"""
import logging
from typing import Callable, Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from ..transformer_decoder.transformer import TransformerEncoderOnly
from .build import PIXEL_DECODER_REGISTRY, select_in_features

logger = logging.getLogger(__name__)

# Number of FPN levels, coarsest first, returned for multi-scale transformer decoders (Mask2Former).
NUM_MULTI_SCALE_LEVELS = 3


def fpn_lateral_conv(in_channels: int, out_channels: int, norm: Optional[str]) -> Conv2d:
    """An FPN lateral 1x1 conv (`adapter_{i}`), with a bias only without norm."""
    conv = Conv2d(in_channels, out_channels, kernel_size=1, bias=norm == "",
                  norm=get_norm(norm, out_channels))
    weight_init.c2_xavier_fill(conv)
    return conv


def fpn_output_conv(in_channels: int, out_channels: int, norm: Optional[str]) -> Conv2d:
    """An FPN output 3x3 conv + norm + ReLU (`layer_{i}`), with a bias only without norm."""
    conv = Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1,
                  bias=norm == "", norm=get_norm(norm, out_channels), activation=F.relu)
    weight_init.c2_xavier_fill(conv)
    return conv


@PIXEL_DECODER_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """FPN-style top-down decoder (GroupNorm by default) ending in a 3x3 conv to mask_dim.

    Parameter names follow the official code: `adapter_{i}` are lateral 1x1 convs, `layer_{i}`
    the 3x3 output convs (i = 1 for the highest resolution), `mask_features` the final conv.
    """

    # Whether forward_features returns transformer encoder features as its second output.
    produces_encoder_features = False

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, conv_dim: int, mask_dim: int,
                 norm: Optional[str] = None):
        super().__init__()
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [name for name, _ in ordered]  # high to low resolution
        feature_channels = [shape.channels for _, shape in ordered]

        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(feature_channels):
            is_lowest_resolution = idx == len(feature_channels) - 1
            if is_lowest_resolution:
                lateral_conv = None
                output_conv = fpn_output_conv(in_channels, conv_dim, norm)
            else:
                lateral_conv = fpn_lateral_conv(in_channels, conv_dim, norm)
                self.add_module(f"adapter_{idx + 1}", lateral_conv)
                output_conv = fpn_output_conv(conv_dim, conv_dim, norm)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Top-down order (low to high resolution), as forward walks them.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "input_shape": select_in_features(cfg, input_shape),
            "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
        }

    def _lowest_resolution(self, x: torch.Tensor, output_conv: Callable):
        """Processes the coarsest feature; returns (y, encoder_features)."""
        return output_conv(x), None

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """features: {name: (B, C_name, H/stride, W/stride)} -> (mask_features (B, mask_dim, H/4,
        W/4), encoder features or None, [the FPN's outputs (B, conv_dim, ...), coarsest first])."""
        encoder_features = None
        multi_scale_features = []
        y = None
        for name, lateral_conv, output_conv in zip(
            self.in_features[::-1], self.lateral_convs, self.output_convs
        ):
            x = features[name]
            if lateral_conv is None:
                y, encoder_features = self._lowest_resolution(x, output_conv)
            else:
                lateral = lateral_conv(x)
                # nearest upsampling, as FPN
                y = output_conv(lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest"))
            if len(multi_scale_features) < NUM_MULTI_SCALE_LEVELS:
                multi_scale_features.append(y)
        return self.mask_features(y), encoder_features, multi_scale_features

    def forward(self, features: Dict[str, torch.Tensor]):
        logger.warning("Call forward_features() of a pixel decoder; forward() is an alias of it.")
        return self.forward_features(features)


@PIXEL_DECODER_REGISTRY.register()
class TransformerEncoderPixelDecoder(BasePixelDecoder):
    """BasePixelDecoder with a transformer encoder on the coarsest (stride-32) feature.

    The encoder output (B, conv_dim, H/32, W/32) is also returned for the transformer decoder
    (MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "transformer_encoder").
    """

    produces_encoder_features = True

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, transformer_dropout: float,
                 transformer_nheads: int, transformer_dim_feedforward: int,
                 transformer_enc_layers: int, transformer_pre_norm: bool, conv_dim: int,
                 mask_dim: int, norm: Optional[str] = None):
        super().__init__(input_shape, conv_dim=conv_dim, mask_dim=mask_dim, norm=norm)
        coarsest = max(input_shape.values(), key=lambda shape: shape.stride)
        self.input_proj = Conv2d(coarsest.channels, conv_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.input_proj)
        self.transformer = TransformerEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            normalize_before=transformer_pre_norm,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        # The coarsest output conv now reads the encoder's conv_dim channels, not the backbone's.
        layer_name = f"layer_{len(self.in_features)}"
        delattr(self, layer_name)
        output_conv = fpn_output_conv(conv_dim, conv_dim, norm)
        self.add_module(layer_name, output_conv)
        self.output_convs[0] = output_conv

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["transformer_dropout"] = cfg.MODEL.MASK_FORMER.DROPOUT
        ret["transformer_nheads"] = cfg.MODEL.MASK_FORMER.NHEADS
        ret["transformer_dim_feedforward"] = cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD
        ret["transformer_enc_layers"] = cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS
        ret["transformer_pre_norm"] = cfg.MODEL.MASK_FORMER.PRE_NORM
        return ret

    def _lowest_resolution(self, x: torch.Tensor, output_conv: Callable):
        encoded = self.transformer(self.input_proj(x), None, self.pe_layer(x))
        return output_conv(encoded), encoded
