"""Swin Transformer backbone (Liu et al., "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows", ICCV 2021, https://arxiv.org/abs/2103.14030), for detectron2.

The network turns an image into a pyramid of four feature maps with strides 4, 8, 16 and 32
(for the usual patch size 4):

* ``PatchEmbed`` cuts the image into non-overlapping ``patch_size x patch_size`` patches and
  projects each to ``embed_dim`` channels (a strided convolution).
* Each of the four stages (``BasicLayer``) is a stack of ``SwinTransformerBlock``s. A block runs
  multi-head self-attention inside non-overlapping ``window_size x window_size`` windows
  (``WindowAttention``, with a learned relative position bias), then an MLP. Every second block
  cyclically shifts the feature map by ``window_size // 2`` first, so that information crosses
  window borders; an attention mask keeps tokens that were not neighbours before the shift from
  attending to one another.
* Between stages ``PatchMerging`` halves the resolution and doubles the channels.

Parameter and buffer names are those of the official MaskFormer repository and of the official
Swin-Transformer-Semantic-Segmentation checkpoints, so those checkpoints load as they are.

Token tensors are laid out as (B, L, C) with L = H * W in row-major order; feature maps given
to detectron2 are (B, C, H, W).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from torch import nn

__all__ = ["SwinTransformer", "D2SwinTransformer"]

# Added to the attention logits of token pairs that the shifted-window mask separates.
MASKED_LOGIT = -100.0


def _pair(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``7 -> (7, 7)``; a pair is returned as a tuple."""
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


class DropPath(nn.Module):
    """Stochastic depth: during training, zeroes a residual branch for a random subset of samples.

    Each sample's branch is dropped with probability ``drop_prob`` and the kept ones are scaled
    by ``1 / (1 - drop_prob)`` so the expectation is unchanged. The identity in eval mode.
    Input and output: any shape (B, ...), the draw being per sample along dimension 0.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        keep = torch.empty(mask_shape, dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
        return x * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Transformer feed-forward network: Linear -> GELU -> Dropout -> Linear -> Dropout.

    Input and output: (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None, act_layer: Type[nn.Module] = nn.GELU,
                 drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Cuts a feature map into non-overlapping square windows.

    Args:
        x: (B, H, W, C), with H and W multiples of ``window_size``.
    Returns:
        (B * num_windows, window_size, window_size, C), contiguous (callers ``.view`` it);
        windows are ordered image by image, then row-major over the window grid.
    """
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    # Not `.reshape`: where the window grid is one row high and B == 1 (always so for the
    # attention mask), size-1 dimensions let reshape return a non-contiguous view, on which the
    # callers' `.view(-1, N, C)` fails. Elsewhere the two make the same copy.
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: (B * num_windows, window_size, window_size, C).
        H, W: size of the feature map the windows were cut from.
    Returns:
        (B, H, W, C), contiguous.
    """
    num_windows = (H // window_size) * (W // window_size)
    B = windows.shape[0] // num_windows
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def relative_position_index(window_size: Tuple[int, int]) -> torch.Tensor:
    """Index into the relative position bias table for every pair of tokens of a window.

    For tokens i = (h_i, w_i) and j = (h_j, w_j) of a Wh x Ww window (row-major), the entry
    [i, j] is ``(h_i - h_j + Wh - 1) * (2 * Ww - 1) + (w_i - w_j + Ww - 1)``: each distinct
    offset gets its own row of the ``(2Wh - 1) * (2Ww - 1)`` table.

    Returns:
        (Wh * Ww, Wh * Ww) int64 tensor.
    """
    Wh, Ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(Wh), torch.arange(Ww), indexing="ij"))
    coords = coords.flatten(1)  # (2, N): the (h, w) of every token
    offsets = coords[:, :, None] - coords[:, None, :]  # (2, N, N): token i minus token j
    dh = offsets[0] + (Wh - 1)  # shifted to start at 0
    dw = offsets[1] + (Ww - 1)
    return dh * (2 * Ww - 1) + dw


def shifted_window_attention_mask(height: int, width: int, window_size: int, shift_size: int,
                                  device: Optional[torch.device] = None,
                                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Attention mask of shifted-window attention for a feature map of the given (padded) size.

    After the map is rolled up and left by ``shift_size``, the windows along the bottom and right
    edges hold tokens from up to three regions that were not adjacent before the roll (along each
    axis: the bulk, the last ``window_size - shift_size`` rows/columns, and the wrapped-around
    first ``shift_size`` ones). Tokens may only attend to tokens of their own region.

    Args:
        height, width: feature map size, multiples of ``window_size``.
    Returns:
        (num_windows, N, N) with N = window_size ** 2: 0 where token i may attend to token j of
        the same window, ``MASKED_LOGIT`` (-100) where it may not.
    """
    region = torch.zeros((1, height, width, 1), device=device, dtype=dtype)
    bands = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for rows in bands:
        for cols in bands:
            region[:, rows, cols, :] = label
            label += 1
    region_windows = window_partition(region, window_size).reshape(-1, window_size * window_size)
    different = region_windows.unsqueeze(1) != region_windows.unsqueeze(2)  # (nW, N, N)
    mask = torch.zeros(different.shape, device=device, dtype=dtype)
    return mask.masked_fill(different, MASKED_LOGIT)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias.

    Args:
        dim: channels C of the tokens.
        window_size: (Wh, Ww).
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: learn a bias for the query, key and value projections.
        qk_scale: scale of the logits; ``head_dim ** -0.5`` when None.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout on the output.
    """

    def __init__(self, dim: int, window_size: Tuple[int, int], num_heads: int,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5

        # One learned bias per head for each of the (2Wh - 1) * (2Ww - 1) relative offsets.
        num_offsets = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_offsets, num_heads))
        # Persistent, as in the official checkpoints (which store it).
        self.register_buffer("relative_position_index", relative_position_index(window_size))

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """(num_heads, N, N) bias added to the attention logits, N = Wh * Ww."""
        N = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(N, N, -1).permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B * num_windows, N, C) tokens of each window, N = Wh * Ww.
            mask: (num_windows, N, N) additive mask (0 or -100), shared by the B images; None
                for unshifted windows.
        Returns:
            (B * num_windows, N, C).
        """
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B_, heads, N, head_dim)

        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B_, heads, N, N)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(B_ // num_windows, num_windows, self.num_heads, N, N)
            attn = attn + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))

        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """A Swin block: (shifted) window attention and an MLP, each a pre-norm residual branch.

    The feature map is padded at the bottom and right to a multiple of ``window_size`` before the
    attention and cropped back after it. The caller sets ``self.H`` and ``self.W`` (the unpadded
    size) before calling ``forward``, as the official implementation does.

    Args:
        dim: channels C.
        num_heads: attention heads.
        window_size: side of the square windows.
        shift_size: cyclic shift before the attention; 0 for regular windows.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias, qk_scale, attn_drop: see :class:`WindowAttention`.
        drop: dropout after the attention output projection and in the MLP.
        drop_path: stochastic depth rate of both residual branches.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 act_layer: Type[nn.Module] = nn.GELU,
                 norm_layer: Type[nn.Module] = nn.LayerNorm):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size} "
                             f"for window_size {window_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size=_pair(window_size), num_heads=num_heads,
                                    qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio),
                       act_layer=act_layer, drop=drop)

        # Unpadded spatial size of the next input, set by BasicLayer.
        self.H: Optional[int] = None
        self.W: Optional[int] = None

    def forward(self, x: torch.Tensor, mask_matrix: Optional[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: (B, H * W, C) with (H, W) = (self.H, self.W).
            mask_matrix: (num_windows, N, N) mask of shifted windows for the padded size
                (see :func:`shifted_window_attention_mask`); only used when shift_size > 0.
        Returns:
            (B, H * W, C).
        """
        B, L, C = x.shape
        H, W = self.H, self.W
        if H is None or W is None or L != H * W:
            raise ValueError(f"input has {L} tokens but the block was told H={H}, W={W}")

        shortcut = x
        x = self.norm1(x).view(B, H, W, C)

        # Pad bottom and right to whole windows; padded tokens are zeros (after the norm).
        ws = self.window_size
        pad_b = (ws - H % ws) % ws
        pad_r = (ws - W % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r

        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            attn_mask = mask_matrix
        else:
            attn_mask = None

        windows = window_partition(x, ws).reshape(-1, ws * ws, C)  # (B * nW, N, C)
        windows = self.attn(windows, mask=attn_mask)
        x = window_reverse(windows.view(-1, ws, ws, C), ws, Hp, Wp)  # (B, Hp, Wp, C)

        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        # Unconditional pads and crops (a no-op without padding) keep the graph free of
        # size-dependent branches, so that an export (ONNX, TorchScript) serves any input size.
        x = x.narrow(1, 0, H).narrow(2, 0, W).contiguous().view(B, H * W, C)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halves the resolution and doubles the channels: each 2x2 group of tokens is concatenated
    (4C), normalised and projected to 2C. Odd sizes are zero-padded at the bottom/right first.

    Args:
        dim: input channels C.
    """

    def __init__(self, dim: int, norm_layer: Type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """
        Args:
            x: (B, H * W, C).
        Returns:
            (B, ceil(H / 2) * ceil(W / 2), 2C).
        """
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"input has {L} tokens, expected H * W = {H * W}")
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, W % 2, 0, H % 2))  # unconditional: see the block
        # The order (top-left, bottom-left, top-right, bottom-right) is the checkpoints' order.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)
        x = x.view(B, -1, 4 * C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: ``depth`` Swin blocks alternating regular and shifted windows, then optionally
    a :class:`PatchMerging`.

    Args:
        dim: channels C of the stage.
        depth: number of blocks.
        num_heads: attention heads of every block.
        window_size: window side; odd blocks shift by ``window_size // 2``.
        drop_path: one stochastic depth rate for all blocks, or one per block.
        downsample: a :class:`PatchMerging`-like class applied at the end, or None.
        use_checkpoint: in training, recompute each block in the backward pass instead of
            storing its activations (torch.utils.checkpoint; same results, less memory).
        Other arguments: see :class:`SwinTransformerBlock`.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: Union[float, Sequence[float]] = 0.0,
                 norm_layer: Type[nn.Module] = nn.LayerNorm,
                 downsample: Optional[Type[nn.Module]] = None, use_checkpoint: bool = False):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth

        self.blocks = nn.ModuleList([
            SwinTransformerBlock(
                dim=dim, num_heads=num_heads, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop,
                attn_drop=attn_drop, drop_path=rates[i], norm_layer=norm_layer)
            for i in range(depth)
        ])
        self.downsample = downsample(dim=dim, norm_layer=norm_layer) if downsample else None

    @staticmethod
    def _run_block(block: "SwinTransformerBlock", x: torch.Tensor, attn_mask: torch.Tensor,
                   H: int, W: int) -> torch.Tensor:
        block.H, block.W = H, W
        return block(x, attn_mask)

    def forward(self, x: torch.Tensor, H: int, W: int
                ) -> Tuple[torch.Tensor, int, int, torch.Tensor, int, int]:
        """
        Args:
            x: (B, H * W, C).
        Returns:
            (out, H, W, next, Wh, Ww): the stage output (B, H * W, C) with its size, and the
            input of the next stage (B, Wh * Ww, 2C) with Wh, Ww = ceil(H / 2), ceil(W / 2);
            without downsampling ``next`` is ``out`` and (Wh, Ww) = (H, W).
        """
        ws = self.window_size
        Hp, Wp = (H + ws - 1) // ws * ws, (W + ws - 1) // ws * ws  # integer ops: also on symbolic sizes
        attn_mask = shifted_window_attention_mask(Hp, Wp, ws, self.shift_size,
                                                  device=x.device, dtype=x.dtype)
        for block in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                # The recomputation in the backward pass calls _run_block again with the same
                # H, W, whatever ran in between.
                x = torch.utils.checkpoint.checkpoint(self._run_block, block, x, attn_mask, H, W,
                                                      use_reentrant=False)
            else:
                x = self._run_block(block, x, attn_mask, H, W)
        if self.downsample is None:
            return x, H, W, x, H, W
        return x, H, W, self.downsample(x, H, W), (H + 1) // 2, (W + 1) // 2


class PatchEmbed(nn.Module):
    """Splits the image into non-overlapping patches and embeds each one (a strided conv),
    optionally followed by a LayerNorm. The image is zero-padded at the bottom/right to a
    multiple of the patch size.

    Args:
        patch_size: patch side (int or pair).
        in_chans: image channels.
        embed_dim: output channels.
        norm_layer: normalisation after the projection, or None.
    """

    def __init__(self, patch_size: Union[int, Sequence[int]] = 4, in_chans: int = 3,
                 embed_dim: int = 96, norm_layer: Optional[Type[nn.Module]] = None):
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size,
                              stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, embed_dim, ceil(H / ph), ceil(W / pw))."""
        _, _, H, W = x.shape
        ph, pw = self.patch_size
        pad_b, pad_r = (ph - H % ph) % ph, (pw - W % pw) % pw
        x = self.proj(F.pad(x, (0, pad_r, 0, pad_b)))  # unconditional: see SwinTransformerBlock
        if self.norm is not None:
            Wh, Ww = x.shape[2:]
            x = self.norm(x.flatten(2).transpose(1, 2))  # (B, Wh * Ww, C)
            x = x.transpose(1, 2).reshape(-1, self.embed_dim, Wh, Ww)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer backbone, usable without a config.

    Args:
        pretrain_img_size: image size of the pretraining; sets the size of the absolute position
            embedding (which is resized to the input by bicubic interpolation).
        patch_size: patch side of the patch embedding.
        in_chans: image channels.
        embed_dim: channels C of the first stage; stage i has C * 2 ** i.
        depths: number of blocks of each stage.
        num_heads: attention heads of each stage.
        window_size: window side.
        mlp_ratio: MLP hidden width relative to the channels.
        qkv_bias: learn a bias for query, key and value.
        qk_scale: attention logit scale; ``head_dim ** -0.5`` when None.
        drop_rate: dropout after the patch embedding, the attention projection and in MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth rate of the last block; it rises linearly from 0 over
            all blocks of all stages.
        norm_layer: normalisation layer class.
        ape: add a learned absolute position embedding (1, C, Hp, Wp) after the patch embedding.
        patch_norm: normalise after the patch embedding.
        out_indices: stages whose output is returned, each normalised by its own ``norm{i}``.
        frozen_stages: -1 freezes nothing; 0 the patch embedding; 1 also the absolute position
            embedding; k >= 2 also stages 0 .. k - 2. Frozen parts get no gradient and stay in
            eval mode.
        use_checkpoint: activation checkpointing of every block, to save memory.

    ``forward`` maps (B, in_chans, H, W) to {"res{i + 2}": (B, C * 2 ** i, H_i, W_i)} for i in
    ``out_indices``, with H_0 = ceil(H / patch_size) and H_{i+1} = ceil(H_i / 2) (same for W).
    """

    def __init__(self, pretrain_img_size: Union[int, Sequence[int]] = 224,
                 patch_size: Union[int, Sequence[int]] = 4, in_chans: int = 3,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.2,
                 norm_layer: Type[nn.Module] = nn.LayerNorm, ape: bool = False,
                 patch_norm: bool = True, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, use_checkpoint: bool = False):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} "
                             "must have one entry per stage")
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages

        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim,
                                      norm_layer=norm_layer if patch_norm else None)
        if ape:
            img_h, img_w = _pair(pretrain_img_size)
            ph, pw = _pair(patch_size)
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, embed_dim, img_h // ph, img_w // pw))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # Stochastic depth rises linearly from 0 to drop_path_rate over all blocks.
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.num_features = [int(embed_dim * 2 ** i) for i in range(self.num_layers)]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            start = sum(depths[:i])
            self.layers.append(BasicLayer(
                dim=self.num_features[i], depth=depths[i], num_heads=num_heads[i],
                window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=rates[start:start + depths[i]], norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None,
                use_checkpoint=use_checkpoint))

        # A normalisation for each returned stage.
        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Truncated normal (std 0.02) for Linear weights, zero biases, unit LayerNorms.

        The relative position bias tables and the absolute position embedding are initialised
        (truncated normal, std 0.02) where they are created.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _freeze_stages(self) -> None:
        """Stops gradients of, and puts in eval mode, the parts selected by ``frozen_stages``."""
        frozen: List[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False
        if self.frozen_stages >= 2:
            frozen.append(self.pos_drop)
            frozen.extend(self.layers[i] for i in range(self.frozen_stages - 1))
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> "SwinTransformer":
        """Switches the mode, keeping frozen stages in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (B, in_chans, H, W) images; any H and W (padded internally as needed).
        Returns:
            {"res{i + 2}": (B, C_i, H_i, W_i)} for i in ``out_indices``, normalised features.
        """
        x = self.patch_embed(x)  # (B, C, Wh, Ww)
        Wh, Ww = x.shape[2:]
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(Wh, Ww), mode="bicubic")
            x = x + pos
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # (B, Wh * Ww, C)

        outputs = {}
        for i, layer in enumerate(self.layers):
            out, H, W, x, Wh, Ww = layer(x, Wh, Ww)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outputs[f"res{i + 2}"] = (
                    out.view(-1, H, W, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
        return outputs


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(SwinTransformer, Backbone):
    """:class:`SwinTransformer` as a detectron2 backbone, built from ``cfg.MODEL.SWIN``.

    All four stages are computed and normalised (``out_indices`` 0..3, so the parameter names are
    those of the official checkpoints whatever is requested); ``forward`` returns the features
    named in ``cfg.MODEL.SWIN.OUT_FEATURES`` among "res2".."res5", with strides
    ``patch_size * 2 ** i`` (4, 8, 16, 32 for the usual patch size 4) and channels
    ``EMBED_DIM * 2 ** i``.
    """

    def __init__(self, cfg, input_shape: Optional[ShapeSpec] = None):
        swin = cfg.MODEL.SWIN
        in_chans = 3
        if input_shape is not None and input_shape.channels is not None:
            in_chans = input_shape.channels
        super().__init__(
            pretrain_img_size=swin.PRETRAIN_IMG_SIZE,
            patch_size=swin.PATCH_SIZE,
            in_chans=in_chans,
            embed_dim=swin.EMBED_DIM,
            depths=swin.DEPTHS,
            num_heads=swin.NUM_HEADS,
            window_size=swin.WINDOW_SIZE,
            mlp_ratio=swin.MLP_RATIO,
            qkv_bias=swin.QKV_BIAS,
            qk_scale=swin.QK_SCALE,
            drop_rate=swin.DROP_RATE,
            attn_drop_rate=swin.ATTN_DROP_RATE,
            drop_path_rate=swin.DROP_PATH_RATE,
            norm_layer=nn.LayerNorm,
            ape=swin.APE,
            patch_norm=swin.PATCH_NORM,
            use_checkpoint=swin.USE_CHECKPOINT,
        )
        stage_names = [f"res{i + 2}" for i in range(self.num_layers)]
        patch_stride = _pair(swin.PATCH_SIZE)[0]
        self._out_feature_strides = {
            name: patch_stride * 2 ** i for i, name in enumerate(stage_names)}
        self._out_feature_channels = dict(zip(stage_names, self.num_features))
        self._out_features = list(swin.OUT_FEATURES)
        unknown = [name for name in self._out_features if name not in stage_names]
        if unknown:
            raise ValueError(f"MODEL.SWIN.OUT_FEATURES has {unknown}; "
                             f"the Swin backbone produces {stage_names}")

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (B, C, H, W) images.
        Returns:
            {name: (B, C_name, H / stride, W / stride) rounded up} for the requested features.
        """
        assert x.dim() == 4, \
            f"SwinTransformer takes an input of shape (N, C, H, W). Got {tuple(x.shape)} instead!"
        features = super().forward(x)
        return {name: y for name, y in features.items() if name in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name],
                            stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32
