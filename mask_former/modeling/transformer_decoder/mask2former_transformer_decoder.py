"""Mask2Former's transformer decoder (Cheng et al., "Masked-attention Mask Transformer for
Universal Image Segmentation", CVPR 2022).

Q learnable queries (features and positions) are refined against the pixel decoder's three
coarsest maps in turn (round robin, each map with a learned level embedding). Each layer runs
masked cross-attention, then self-attention among the queries, then an FFN. Masked: a query
attends only to the pixels where the mask it predicted before the layer has sigmoid >= 0.5
(resized to the map, detached); a query whose mask is empty there attends everywhere. A class
and a mask are predicted from the learnable queries and after every layer: DEC_LAYERS
predictions for DEC_LAYERS - 1 layers, the last one final, the others auxiliary.

Shapes: B images, Q queries, C = hidden_dim, (H, W) the mask features' size (1/4 of the input),
(h_l, w_l) the maps'. Sequences are batch-first, (B, L, C).
"""
import logging
from typing import List, Optional, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from torch import nn

from ...errors import ConfigError
from .build import TRANSFORMER_DECODER_REGISTRY
from .maskformer_transformer_decoder import MLP
from .position_encoding import PositionEmbeddingSine
from .transformer import MultiheadAttention, feedforward, residual, xavier_init

logger = logging.getLogger(__name__)

# The decoder always reads three maps, as the official.
NUM_FEATURE_LEVELS = 3


class SelfAttentionLayer(nn.Module):
    """Self-attention among the queries, as a residual sublayer (post-norm by default)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0,
                 normalize_before: bool = False):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        xavier_init(self)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C) -> (B, Q, C)."""
        def attention(x):
            return self.self_attn(x + query_pos, x + query_pos, x)

        return residual(tgt, attention, self.norm, self.dropout, self.normalize_before)


class CrossAttentionLayer(nn.Module):
    """The queries attend to a map's pixels, as a residual sublayer (post-norm by default)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0,
                 normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        xavier_init(self)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor,
                memory_mask: Optional[torch.Tensor], pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        """tgt, query_pos: (B, Q, C); memory, pos: (B, h*w, C); memory_mask: (B, Q, h*w) bool,
        True where a query must not attend, or None. Returns (B, Q, C)."""
        def attention(x):
            return self.multihead_attn(x + query_pos, memory + pos, memory, attn_mask=memory_mask)

        return residual(tgt, attention, self.norm, self.dropout, self.normalize_before)


class FFNLayer(nn.Module):
    """The transformer FFN as a residual sublayer (post-norm by default)."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0,
                 normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        xavier_init(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """(B, Q, C) -> (B, Q, C)."""
        def ffn(x):
            return feedforward(x, self.linear1, self.dropout, self.linear2)

        return residual(tgt, ffn, self.norm, self.dropout, self.normalize_before)


def masked_attention_mask(mask_logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Where each query must not attend on a map of `size` (h, w): (B, Q, h*w) bool.

    mask_logits: (B, Q, H, W). A pixel is outside a query's mask where the mask, bilinearly
    resized to the map, has sigmoid < 0.5. A query whose mask is empty on the map would have
    nothing to attend to: it attends everywhere instead. No gradient flows through the mask.
    """
    resized = F.interpolate(mask_logits.detach(), size=tuple(size), mode="bilinear",
                            align_corners=False)
    outside = resized.sigmoid().flatten(2) < 0.5
    return outside & ~outside.all(-1, keepdim=True)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Masked-attention decoder over three maps, coarsest first.

    Called as decoder(x, mask_features, mask) with x the pixel decoder's three coarsest maps
    (TRANSFORMER_IN_FEATURE "multi_scale_pixel_decoder"), each (B, in_channels, h_l, w_l), and
    mask_features (B, mask_dim, H, W); `mask` (padding) is ignored, as the official ignores it.
    Returns {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H, W), "aux_outputs": [the same
    for the learnable queries and each layer but the last]}.
    """

    # Version 2 checkpoints name the learnable query features `query_feat` (`static_query`
    # before); older ones are renamed when loaded.
    _version = 2

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        """
        Args:
            in_channels: channels of the maps in x (the pixel decoder's CONVS_DIM).
            mask_classification: must be True: this decoder always predicts classes.
            num_classes: K, without "no object".
            hidden_dim, nheads, dim_feedforward, pre_norm: the transformer's width, heads, FFN
                width and pre-LayerNorm; no dropout, as the official.
            num_queries: Q.
            dec_layers: transformer layers (DEC_LAYERS - 1: one prediction is made before them).
            mask_dim: channels of mask_features.
            enforce_input_project: a 1x1 conv on the maps even when in_channels == hidden_dim.
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder always classifies its masks: "
                             "mask_classification must be True")
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        for _ in range(dec_layers):
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(hidden_dim, nheads, normalize_before=pre_norm))
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(hidden_dim, nheads, normalize_before=pre_norm))
            self.transformer_ffn_layers.append(
                FFNLayer(hidden_dim, dim_feedforward, normalize_before=pre_norm))
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnable query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query positions
        self.level_embed = nn.Embedding(NUM_FEATURE_LEVELS, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(NUM_FEATURE_LEVELS):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
            else:
                proj = nn.Sequential()
            self.input_proj.append(proj)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ConfigError(f"MODEL.MASK_FORMER.DEC_LAYERS={mf.DEC_LAYERS}: "
                              "MultiScaleMaskedTransformerDecoder needs at least 1 (the "
                              "prediction from the learnable queries, plus one per layer)")
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            # DEC_LAYERS counts the prediction from the learnable queries (it has a loss too).
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
        }

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        version = local_metadata.get("version")
        old, new = prefix + "static_query.weight", prefix + "query_feat.weight"
        if (version is None or version < 2) and old in state_dict:
            state_dict[new] = state_dict.pop(old)
            logger.warning(f"Renamed {old} to {new} (a Mask2Former checkpoint of the first format)")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, x: List[torch.Tensor], mask_features: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> dict:
        if not isinstance(x, (list, tuple)) or len(x) != NUM_FEATURE_LEVELS:
            got = f"{len(x)} maps" if isinstance(x, (list, tuple)) else "one map"
            raise ConfigError(
                f"MultiScaleMaskedTransformerDecoder reads {NUM_FEATURE_LEVELS} maps, got {got}: "
                "set MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE to 'multi_scale_pixel_decoder' "
                "with a pixel decoder that returns at least 3 multi-scale features")
        del mask  # padding is not masked, as the official ("it does not affect performance")
        srcs, pos, sizes = [], [], []
        for level, feature in enumerate(x):
            sizes.append(tuple(feature.shape[-2:]))
            pos.append(self.pe_layer(feature).flatten(2).transpose(1, 2))
            src = self.input_proj[level](feature).flatten(2) + self.level_embed.weight[level][:, None]
            srcs.append(src.transpose(1, 2))  # (B, h*w, C)

        batch = srcs[0].shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        output = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)

        predictions: List[Tuple[torch.Tensor, torch.Tensor]] = []
        outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
            output, mask_features, sizes[0])
        predictions.append((outputs_class, outputs_mask))
        for i in range(self.num_layers):
            level = i % NUM_FEATURE_LEVELS
            output = self.transformer_cross_attention_layers[i](
                output, srcs[level], attn_mask, pos[level], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            is_last = i == self.num_layers - 1
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
                output, mask_features, None if is_last else sizes[(i + 1) % NUM_FEATURE_LEVELS])
            predictions.append((outputs_class, outputs_mask))

        return {
            "pred_logits": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": [{"pred_logits": logits, "pred_masks": masks}
                            for logits, masks in predictions[:-1]],
        }

    def forward_prediction_heads(self, output: torch.Tensor, mask_features: torch.Tensor,
                                 attn_mask_size: Optional[Sequence[int]]):
        """Class logits (B, Q, K+1) and mask logits (B, Q, H, W) from the queries (B, Q, C), and
        the next layer's attention mask (B, Q, h*w) for a map of attn_mask_size (or None)."""
        decoder_output = self.decoder_norm(output)
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        attn_mask = (None if attn_mask_size is None
                     else masked_attention_mask(outputs_mask, attn_mask_size))
        return outputs_class, outputs_mask, attn_mask
