"""The transformer decoder of MaskFormer: N learned queries -> class logits and mask embeddings."""
from typing import Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from torch import nn

from .build import TRANSFORMER_DECODER_REGISTRY
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer


class MLP(nn.Module):
    """A plain multi-layer perceptron with ReLU between layers: (..., input_dim) -> (..., output_dim)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class TransformerPredictor(nn.Module):
    """Decodes queries against one feature map and predicts a class and a mask per query.

    Outputs, for B images, Q queries, K classes and per-pixel embeddings at (H, W):
      - "pred_logits": (B, Q, K+1), the last class is "no object" (only with mask_classification);
      - "pred_masks": (B, Q, H, W), mask logits: query mask embedding . per-pixel embedding;
      - "aux_outputs": one dict of the same keys per earlier decoder layer (with deep supervision).
    """

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
        dropout: float,
        dim_feedforward: int,
        enc_layers: int,
        dec_layers: int,
        pre_norm: bool,
        deep_supervision: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        super().__init__()
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim,
            nhead=nheads,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            normalize_before=pre_norm,
            return_intermediate_dec=deep_supervision,
        )
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
            weight_init.c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Sequential()
        self.aux_loss = deep_supervision
        if mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        mf = cfg.MODEL.MASK_FORMER
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dropout": mf.DROPOUT,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "enc_layers": mf.ENC_LAYERS,
            "dec_layers": mf.DEC_LAYERS,
            "pre_norm": mf.PRE_NORM,
            "deep_supervision": mf.DEEP_SUPERVISION,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
        }

    def forward(self, x: torch.Tensor, mask_features: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> dict:
        """x: (B, C_in, h, w) the feature the queries attend to; mask_features: (B, mask_dim, H, W);
        mask: (B, h, w), True on padding that the queries must not attend to, or None."""
        pos = self.pe_layer(x, mask)
        hs, _ = self.transformer(self.input_proj(x), mask, self.query_embed.weight, pos)
        # hs: (L, B, Q, hidden_dim), L = number of decoder layers (1 without deep supervision)
        outputs_class = self.class_embed(hs) if self.mask_classification else None
        if not self.aux_loss:
            hs = hs[-1:]
        mask_embed = self.mask_embed(hs)
        outputs_masks = torch.einsum("lbqc,bchw->lbqhw", mask_embed, mask_features)

        out = {"pred_masks": outputs_masks[-1]}
        if outputs_class is not None:
            out["pred_logits"] = outputs_class[-1]
        if self.aux_loss:
            aux_outputs = [{"pred_masks": m} for m in outputs_masks[:-1]]
            if outputs_class is not None:
                for aux, logits in zip(aux_outputs, outputs_class[:-1]):
                    aux["pred_logits"] = logits
            out["aux_outputs"] = aux_outputs
        return out


@TRANSFORMER_DECODER_REGISTRY.register()
class StandardTransformerDecoder(TransformerPredictor):
    """MaskFormer's decoder under the name Mask2Former's repository registers it as (same
    parameters), so that Mask2Former configs naming it load."""
