"""Mask2Former's pixel decoder: a multi-scale deformable-attention encoder over the backbone's
coarser features (MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES, res3-res5 by
default), then FPN steps on the finer ones down to COMMON_STRIDE (res2, 1/4).

`forward_features(features)` returns (mask_features (B, MASK_DIM, H/4, W/4), the encoder's
coarsest output (B, CONVS_DIM, H/32, W/32), the three coarsest outputs, coarsest first, which
the multi-scale transformer decoder reads); see build.py. Parameter names are the official ones,
so Mask2Former checkpoints load as they are.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn

from ...errors import ConfigError
from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from ..transformer_decoder.transformer import _ResidualLayer, xavier_init
from .build import PIXEL_DECODER_REGISTRY, select_in_features
from .fpn import NUM_MULTI_SCALE_LEVELS, fpn_lateral_conv, fpn_output_conv
from .ops import MSDeformAttn

# The encoder's FFN width. The official code fixes it ("use 1024 for deformable transformer
# encoder"); MODEL.MASK_FORMER.DIM_FEEDFORWARD is the transformer decoder's.
ENCODER_DIM_FEEDFORWARD = 1024
# The input projections' GroupNorm, fixed in the official code whatever SEM_SEG_HEAD.NORM says.
INPUT_PROJ_GROUPS = 32


class MSDeformAttnTransformerEncoderLayer(_ResidualLayer):
    """Deformable self-attention over all levels' pixels, then the FFN; post-norm. (B, S, C)."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int,
                 n_points: int):
        super().__init__(d_model, d_ffn, dropout, normalize_before=False)
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: Sequence[Tuple[int, int]], level_start_index: Sequence[int]
                ) -> torch.Tensor:
        def self_attention(x):
            return self.self_attn(x + pos, reference_points, x, spatial_shapes, level_start_index)

        src = self._residual(src, self_attention, self.norm1, self.dropout1)
        return self._residual(src, self._feedforward, self.norm2, self.dropout2)


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of deformable encoder layers, every pixel a query at its own centre."""

    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(
            MSDeformAttnTransformerEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    @staticmethod
    def reference_points(spatial_shapes: Sequence[Tuple[int, int]], device: torch.device
                         ) -> torch.Tensor:
        """(1, S, 1, 2): each pixel's centre as (x, y) in [0, 1] of its level, the same on every
        level (the maps are never padded: the official code masks no padding here)."""
        points = []
        for height, width in spatial_shapes:
            y = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
            x = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
            grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
            points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
        return torch.cat(points)[None, :, None, :]

    def forward(self, src: torch.Tensor, pos: torch.Tensor,
                spatial_shapes: Sequence[Tuple[int, int]], level_start_index: Sequence[int]
                ) -> torch.Tensor:
        """src, pos: (B, S, C) -> (B, S, C)."""
        reference_points = self.reference_points(spatial_shapes, src.device)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable DETR's encoder on a list of maps: adds a learned embedding per level to the
    position encoding, runs the encoder over all levels' pixels at once."""

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6,
                 dim_feedforward: int = 1024, dropout: float = 0.1, num_feature_levels: int = 4,
                 enc_n_points: int = 4):
        super().__init__()
        self.encoder = MSDeformAttnTransformerEncoder(
            num_encoder_layers, d_model=d_model, d_ffn=dim_feedforward, dropout=dropout,
            n_levels=num_feature_levels, n_heads=nhead, n_points=enc_n_points)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        # As the official: Xavier everywhere, then deformable attention's own initialisation.
        xavier_init(self)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]
                ) -> Tuple[torch.Tensor, List[Tuple[int, int]], List[int]]:
        """srcs, pos_embeds: per level (B, C, H_l, W_l).

        Returns the encoded pixels (B, S, C) of all levels, flattened row-major and concatenated,
        the levels' (H_l, W_l) and where each starts along S.
        """
        # The sizes as the maps' shapes give them, never through int(): while an export traces
        # the model they are graph operations, so the exported graph takes every input size.
        spatial_shapes = [(src.shape[2], src.shape[3]) for src in srcs]
        level_start_index = [0]
        for height, width in spatial_shapes[:-1]:
            level_start_index.append(level_start_index[-1] + height * width)
        src_flatten = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)
        pos_flatten = torch.cat([pos.flatten(2).transpose(1, 2) + self.level_embed[level]
                                 for level, pos in enumerate(pos_embeds)], 1)
        memory = self.encoder(src_flatten, pos_flatten, spatial_shapes, level_start_index)
        return memory, spatial_shapes, level_start_index


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder on the coarser features, FPN on the finer ones.

    Parameter names follow the official code: `input_proj.{i}` project the encoder's inputs
    (coarsest first), `transformer` is the encoder, `adapter_{i}` / `layer_{i}` the FPN's lateral
    and output convs (i = 1 for the highest resolution), `mask_features` the final 1x1 conv.
    """

    # forward_features returns the encoder's coarsest output as its second value, as the
    # official one does (so TRANSFORMER_IN_FEATURE "transformer_encoder" works with it too).
    produces_encoder_features = True

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, transformer_dropout: float,
                 transformer_nheads: int, transformer_dim_feedforward: int,
                 transformer_enc_layers: int, transformer_n_points: int, conv_dim: int,
                 mask_dim: int, norm: Optional[str] = None, transformer_in_features: List[str],
                 common_stride: int, mixed_precision: bool = False):
        """
        Args:
            input_shape: the backbone features the decoder reads (SEM_SEG_HEAD.IN_FEATURES).
            transformer_in_features: those of them the encoder reads
                (DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES); the finer ones go through the FPN.
            transformer_nheads, transformer_n_points: heads and points per head and level of
                deformable attention (DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS / _N_POINTS).
            transformer_enc_layers, transformer_dim_feedforward, transformer_dropout: the
                encoder's depth (SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS), FFN width and dropout.
            conv_dim: channels of the encoder and FPN (CONVS_DIM); mask_dim: of mask_features.
            norm: the FPN convs' norm (SEM_SEG_HEAD.NORM).
            common_stride: the stride of mask_features (SEM_SEG_HEAD.COMMON_STRIDE).
            mixed_precision: under autocast, run in mixed precision too (matrix products in
                half precision; the sampling points and the bilinear sampling stay float32, as
                autocast runs grid_sample in its widest input's type, the grid's). False, as the
                official: float32 always.
        """
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if not transformer_in_features or missing:
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES="
                f"{list(transformer_in_features)} must name some of the pixel decoder's features "
                f"(MODEL.SEM_SEG_HEAD.IN_FEATURES: {sorted(input_shape)}); missing: {missing}")
        if conv_dim % INPUT_PROJ_GROUPS != 0:
            raise ConfigError(f"MODEL.SEM_SEG_HEAD.CONVS_DIM={conv_dim} must be a multiple of "
                              f"{INPUT_PROJ_GROUPS} for MSDeformAttnPixelDecoder's GroupNorm")
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [name for name, _ in ordered]  # high to low resolution
        encoder_inputs = [(name, shape) for name, shape in ordered
                          if name in transformer_in_features]
        self.transformer_in_features = [name for name, _ in encoder_inputs]
        self.mixed_precision = mixed_precision

        self.input_proj = nn.ModuleList()
        for _, shape in encoder_inputs[::-1]:  # low to high resolution
            conv = nn.Conv2d(shape.channels, conv_dim, kernel_size=1)
            nn.init.xavier_uniform_(conv.weight, gain=1)
            nn.init.zeros_(conv.bias)
            self.input_proj.append(nn.Sequential(conv, nn.GroupNorm(INPUT_PROJ_GROUPS, conv_dim)))
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=len(encoder_inputs),
            enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)

        # FPN steps from the encoder's finest stride down to common_stride, on the finer features.
        finest_encoder_stride = encoder_inputs[0][1].stride
        steps = math.log2(finest_encoder_stride / common_stride)
        finer = [shape for _, shape in ordered if shape.stride < finest_encoder_stride]
        if steps != int(steps) or not 0 <= steps <= len(finer):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.COMMON_STRIDE={common_stride}: the encoder's finest stride "
                f"is {finest_encoder_stride}, and {len(finer)} finer features are left for the "
                f"FPN steps between them (one per factor of 2)")
        self.num_fpn_levels = int(steps)
        lateral_convs, output_convs = [], []
        for idx, shape in enumerate(finer[:self.num_fpn_levels]):
            lateral_conv = fpn_lateral_conv(shape.channels, conv_dim, norm)
            output_conv = fpn_output_conv(conv_dim, conv_dim, norm)
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Top-down order (low to high resolution), as forward walks them.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": select_in_features(cfg, input_shape),
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            # The official code reads MASK_FORMER.NHEADS and fixes 4 points; its configs keep
            # these keys equal to those (8 and 4).
            "transformer_nheads": head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "transformer_dim_feedforward": ENCODER_DIM_FEEDFORWARD,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": head.COMMON_STRIDE,
            "mixed_precision": head.DEFORMABLE_TRANSFORMER_ENCODER_MIXED_PRECISION,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """features: {name: (B, C_name, H/stride, W/stride)} -> (mask_features (B, mask_dim,
        H/4, W/4), the encoder's coarsest output (B, conv_dim, H/32, W/32), [the three coarsest
        outputs (B, conv_dim, ...), coarsest first])."""
        device_type = next(iter(features.values())).device.type
        # In float32 under mixed precision, as the official: sampling locations in half
        # precision would be off by up to a pixel of the finer maps. With `mixed_precision` the
        # offsets are half precision but are added to float32 reference points, and the sampling
        # itself runs in float32 (autocast runs grid_sample in its widest input's type).
        if self.mixed_precision:
            return self._forward_features(features)
        with torch.autocast(device_type, enabled=False):
            return self._forward_features(features)

    def _forward_features(self, features: Dict[str, torch.Tensor]):
        srcs, pos = [], []
        for proj, name in zip(self.input_proj, self.transformer_in_features[::-1]):
            x = features[name].float()
            srcs.append(proj(x))
            pos.append(self.pe_layer(x))
        memory, spatial_shapes, level_start_index = self.transformer(srcs, pos)
        batch, _, channels = memory.shape
        out = [memory[:, start:start + height * width].transpose(1, 2).reshape(
                   batch, channels, height, width)
               for (height, width), start in zip(spatial_shapes, level_start_index)]
        finer = self.in_features[:self.num_fpn_levels][::-1]
        for name, lateral_conv, output_conv in zip(finer, self.lateral_convs, self.output_convs):
            lateral = lateral_conv(features[name].float())
            # Bilinear here (MaskFormer's FPN upsamples with nearest), as the official.
            upsampled = F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear",
                                      align_corners=False)
            out.append(output_conv(lateral + upsampled))
        return self.mask_features(out[-1]), out[0], out[:NUM_MULTI_SCALE_LEVELS]
