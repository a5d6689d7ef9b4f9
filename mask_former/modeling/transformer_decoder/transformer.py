"""DETR's transformer, batch-first, with the parameter names of the official MaskFormer.

Attention runs through `F.scaled_dot_product_attention` (fused kernels on GPU) while keeping
`nn.MultiheadAttention`'s parameter names (`in_proj_weight`, `in_proj_bias`, `out_proj`), so
official checkpoints load unchanged.

Shapes: sequences are (B, L, C); image features are (B, C, H, W) and are flattened to
(B, H*W, C) on the way in.
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadAttention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameters, on batch-first inputs."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query: (B, Lq, C); key, value: (B, Lk, C); key_padding_mask: (B, Lk) and attn_mask:
        (B, Lq, Lk) or (B, heads, Lq, Lk), bool, True = must not attend (nn.MultiheadAttention's
        convention). A query row must keep at least one key: a fully masked row gives NaN.

        Returns (B, Lq, C).
        """
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._split_heads(F.linear(query, w_q, b_q))
        k = self._split_heads(F.linear(key, w_k, b_k))
        v = self._split_heads(F.linear(value, w_v, b_v))
        masked = self._merge_masks(key_padding_mask, attn_mask)
        dropout_p = self.dropout if self.training else 0.0
        if q.is_cuda:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if masked is None else ~masked, dropout_p=dropout_p)
        else:
            out = self._reference_attention(q, k, v, masked, dropout_p)
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))

    @staticmethod
    def _merge_masks(key_padding_mask: Optional[torch.Tensor],
                     attn_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """One bool mask broadcastable to (B, heads, Lq, Lk), True = must not attend, or None."""
        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask[:, None]  # the same mask for every head
        if key_padding_mask is None:
            return attn_mask
        key_padding_mask = key_padding_mask[:, None, None, :]
        return key_padding_mask if attn_mask is None else key_padding_mask | attn_mask

    @staticmethod
    def _reference_attention(q, k, v, masked, dropout_p):
        """softmax(q k^T / sqrt(d)) v in the operation order of nn.MultiheadAttention.

        Used off the GPU: on one machine it gives bit-identical results to the official
        implementation (nn.MultiheadAttention), where the CPU fused kernel rounds differently.
        `masked`: bool, broadcastable to (B, heads, Lq, Lk), True = must not attend.
        """
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        if masked is not None:
            scores = scores.masked_fill(masked, float("-inf"))
        weights = scores.softmax(-1)
        if dropout_p > 0:  # not a training-mode dropout op of ratio 0 in an exported graph
            weights = F.dropout(weights, p=dropout_p)
        return weights @ v

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> (B, heads, L, C / heads)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)


def residual(x: torch.Tensor, sublayer: Callable, norm: nn.Module, dropout: nn.Module,
             normalize_before: bool) -> torch.Tensor:
    """A residual sublayer: pre-norm `x + dropout(sublayer(norm(x)))` or post-norm
    `norm(x + dropout(sublayer(x)))`."""
    if normalize_before:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


def feedforward(x: torch.Tensor, linear1: nn.Linear, dropout: nn.Module, linear2: nn.Linear
                ) -> torch.Tensor:
    """The transformer FFN: linear2(dropout(relu(linear1(x))))."""
    return linear2(dropout(F.relu(linear1(x))))


class _ResidualLayer(nn.Module):
    """What encoder and decoder layers share: residual sublayers (pre- or post-norm) and the FFN."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, normalize_before: bool):
        super().__init__()
        self.normalize_before = normalize_before
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

    def _residual(self, x: torch.Tensor, sublayer: Callable, norm: nn.Module, dropout: nn.Module):
        return residual(x, sublayer, norm, dropout, self.normalize_before)

    def _feedforward(self, x: torch.Tensor) -> torch.Tensor:
        return feedforward(x, self.linear1, self.dropout, self.linear2)


class TransformerEncoderLayer(_ResidualLayer):
    """Self-attention + FFN over (B, L, C)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 normalize_before: bool = False):
        super().__init__(d_model, dim_feedforward, dropout, normalize_before)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        def self_attention(x):
            return self.self_attn(x + pos, x + pos, x, key_padding_mask)

        src = self._residual(src, self_attention, self.norm1, self.dropout1)
        return self._residual(src, self._feedforward, self.norm2, self.dropout2)


class TransformerDecoderLayer(_ResidualLayer):
    """Self-attention over queries, cross-attention to memory, FFN. Queries (B, Q, C)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 normalize_before: bool = False):
        super().__init__(d_model, dim_feedforward, dropout, normalize_before)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor,
                memory_key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        def self_attention(x):
            return self.self_attn(x + query_pos, x + query_pos, x)

        def cross_attention(x):
            return self.multihead_attn(x + query_pos, memory + pos, memory, memory_key_padding_mask)

        tgt = self._residual(tgt, self_attention, self.norm1, self.dropout1)
        tgt = self._residual(tgt, cross_attention, self.norm2, self.dropout2)
        return self._residual(tgt, self._feedforward, self.norm3, self.dropout3)


class TransformerEncoder(nn.Module):
    """A stack of encoder layers; a final LayerNorm only in the pre-norm variant."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int,
                 dropout: float, normalize_before: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model) if normalize_before else None

    def forward(self, src: torch.Tensor, pos: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """src, pos: (B, L, C) -> (B, L, C)."""
        for layer in self.layers:
            src = layer(src, pos, key_padding_mask)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    """A stack of decoder layers with a shared final LayerNorm.

    Returns (num_layers, B, Q, C) with every layer's normalised output when `return_intermediate`,
    else (1, B, Q, C) with the last one.
    """

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int,
                 dropout: float, normalize_before: bool, return_intermediate: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.return_intermediate = return_intermediate

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor,
                memory_key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        intermediate = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos, memory_key_padding_mask)
            if self.return_intermediate:
                intermediate.append(self.norm(tgt))
        if self.return_intermediate:
            return torch.stack(intermediate)
        return self.norm(tgt).unsqueeze(0)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform initialisation of every matrix of `module` (DETR's)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _flatten_image(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def _flatten_mask(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """(B, H, W) -> (B, H*W), or None."""
    return None if mask is None else mask.flatten(1)


class Transformer(nn.Module):
    """DETR's encoder-decoder: N learned queries attend to an image feature map."""

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 normalize_before: bool = False, return_intermediate_dec: bool = False):
        super().__init__()
        self.encoder = TransformerEncoder(d_model, nhead, num_encoder_layers, dim_feedforward,
                                          dropout, normalize_before)
        self.decoder = TransformerDecoder(d_model, nhead, num_decoder_layers, dim_feedforward,
                                          dropout, normalize_before, return_intermediate_dec)
        xavier_init(self)

    def forward(self, src: torch.Tensor, mask: Optional[torch.Tensor], query_embed: torch.Tensor,
                pos_embed: torch.Tensor):
        """src, pos_embed: (B, C, H, W); mask: (B, H, W) or None; query_embed: (Q, C).

        Returns the decoder states (L, B, Q, C) and the encoder memory (B, C, H, W).
        """
        batch, channels, height, width = src.shape
        mask = _flatten_mask(mask)
        pos = _flatten_image(pos_embed)
        query_pos = query_embed.unsqueeze(0).expand(batch, -1, -1)
        memory = self.encoder(_flatten_image(src), pos, mask)
        hs = self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos, mask)
        return hs, memory.transpose(1, 2).reshape(batch, channels, height, width)


class TransformerEncoderOnly(nn.Module):
    """The encoder half of `Transformer`, applied to a feature map: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, normalize_before: bool = False):
        super().__init__()
        self.encoder = TransformerEncoder(d_model, nhead, num_encoder_layers, dim_feedforward,
                                          dropout, normalize_before)
        xavier_init(self)

    def forward(self, src: torch.Tensor, mask: Optional[torch.Tensor],
                pos_embed: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = src.shape
        memory = self.encoder(_flatten_image(src), _flatten_image(pos_embed), _flatten_mask(mask))
        return memory.transpose(1, 2).reshape(batch, channels, height, width)
