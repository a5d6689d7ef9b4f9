"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021), in pure PyTorch.

A query attends to a few points per head and feature level instead of to every pixel: offsets
predicted from the query place the points around its reference point, the values there are read
by bilinear interpolation and summed with weights predicted from the query (a softmax over all
levels and points of a head).

No compiled extension: `ms_deform_attn_pytorch` samples with `F.grid_sample` on every device, as
the official `ms_deform_attn_core_pytorch` (which the official CUDA op equals). Two fast paths
compute the same function on a GPU: `ms_deform_attn(..., fast=True)` through torch.compile, and
`ms_deform_attn(..., triton=True)` through Triton kernels written like the official CUDA op
(ms_deform_attn_triton.py). An `MSDeformAttn` takes them when its `fast` or `triton` attribute is
set, for example by `use_fast_ms_deform_attn(model)`. Nothing switches them on by itself.

Shapes: B images, L levels of (H_l, W_l) pixels, S = sum_l H_l * W_l, M heads of D channels,
Lq queries, P points per head and level.
"""
import functools
import math
from typing import Callable, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

# The levels' (H_l, W_l): a (L, 2) long tensor, as the official op takes, or int pairs. A tensor
# on a GPU costs a host sync to read; the pixel decoder passes its maps' sizes (`x.shape`).
SpatialShapes = Union[torch.Tensor, Sequence[Sequence[int]]]
LevelStarts = Union[torch.Tensor, Sequence[int]]


def _size_pairs(spatial_shapes: SpatialShapes) -> List[Tuple[int, int]]:
    """The (H_l, W_l) as given, read from the host if a tensor. Sizes are not passed through
    int(): while the model is traced for an export, the maps' sizes the pixel decoder passes are
    traced values, which int() would record as constants (a graph for one input size only)."""
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(height, width) for height, width in spatial_shapes]


def _starts(values: LevelStarts) -> List[int]:
    """The level starts as given (traced values too, as `_size_pairs`), read if a tensor."""
    return values.tolist() if isinstance(values, torch.Tensor) else list(values)


def _check_levels(shapes: List[Tuple[int, int]], starts: List[int], total: int,
                  num_levels: int) -> None:
    if len(shapes) != num_levels or len(starts) != num_levels:
        raise ValueError(f"ms_deform_attn: {len(shapes)} spatial shapes and {len(starts)} level "
                         f"starts for sampling locations of {num_levels} levels")
    if sum(h * w for h, w in shapes) != total:
        raise ValueError(f"ms_deform_attn: spatial shapes {shapes} hold "
                         f"{sum(h * w for h, w in shapes)} pixels, value has {total}")


def ms_deform_attn_pytorch(value: torch.Tensor, spatial_shapes: SpatialShapes,
                           level_start_index: LevelStarts, sampling_locations: torch.Tensor,
                           attention_weights: torch.Tensor) -> torch.Tensor:
    """Samples each head's value maps at its points and sums them with the attention weights.

    Args:
        value: (B, S, M, D), the levels' maps flattened row-major and concatenated.
        spatial_shapes: (L, 2), each level's (H_l, W_l).
        level_start_index: (L,), where each level starts along S.
        sampling_locations: (B, Lq, M, L, P, 2), points as (x, y) in [0, 1] of each level's map:
            (0, 0) is the top-left corner of its top-left pixel, (1, 1) the bottom-right corner of
            its bottom-right pixel; points outside read zeros.
        attention_weights: (B, Lq, M, L, P).
    Returns:
        (B, Lq, M * D), head m in channels m * D to (m + 1) * D.
    """
    shapes = _size_pairs(spatial_shapes)
    starts = _starts(level_start_index)
    batch, total, heads, channels = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    # Not checked in a trace: it would record the checks' outcomes as constants, and the sizes
    # there are those of the maps the values were flattened from.
    if not torch.jit.is_tracing():
        _check_levels(shapes, starts, total, num_levels)
    # grid_sample's coordinates run from -1 to 1 between the maps' outer edges (align_corners=False).
    grids = 2 * sampling_locations - 1
    # (B, Lq, M, L, P) -> (B * M, 1, Lq, L, P)
    weights = attention_weights.transpose(1, 2).reshape(
        batch * heads, 1, num_queries, num_levels, num_points)
    output = None
    for level, ((height, width), start) in enumerate(zip(shapes, starts)):
        # (B, H*W, M, D) -> (B * M, D, H, W)
        value_l = value[:, start:start + height * width].permute(0, 2, 3, 1).reshape(
            batch * heads, channels, height, width)
        # (B, Lq, M, P, 2) -> (B * M, Lq, P, 2)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (B * M, D, Lq, P)
        # Summed level by level: never holds all levels' samples at once.
        contribution = (sampled * weights[..., level, :]).sum(-1)  # (B * M, D, Lq)
        output = contribution if output is None else output + contribution
    return output.view(batch, heads * channels, num_queries).transpose(1, 2).contiguous()


@functools.lru_cache(maxsize=None)
def _compiled_ms_deform_attn() -> Callable:
    """`ms_deform_attn_pytorch` through torch.compile, compiled once per process on first use
    (and again for new feature sizes; fixed-size training batches compile once)."""
    return torch.compile(ms_deform_attn_pytorch)


def ms_deform_attn(value: torch.Tensor, spatial_shapes: SpatialShapes,
                   level_start_index: LevelStarts, sampling_locations: torch.Tensor,
                   attention_weights: torch.Tensor, fast: bool = False,
                   triton: bool = False) -> torch.Tensor:
    """`ms_deform_attn_pytorch` (same arguments and result), through torch.compile if `fast`, or
    through the Triton kernels of ms_deform_attn_triton.py if `triton` and on a GPU (a float32
    result, as autocast's grid_sample gives)."""
    if triton and value.is_cuda:
        from .ms_deform_attn_triton import ms_deform_attn_triton

        shapes, starts = _size_pairs(spatial_shapes), _starts(level_start_index)
        _check_levels(shapes, starts, value.shape[1], sampling_locations.shape[3])
        return ms_deform_attn_triton(value, shapes, starts, sampling_locations, attention_weights)
    function = _compiled_ms_deform_attn() if fast else ms_deform_attn_pytorch
    return function(value, spatial_shapes, level_start_index, sampling_locations,
                    attention_weights)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with the official parameter names (`sampling_offsets`,
    `attention_weights`, `value_proj`, `output_proj`) and initialisation.

    Args:
        d_model: channels C of queries and values, M * D.
        n_levels: L; n_heads: M; n_points: P.
        fast: take the torch.compile path of `ms_deform_attn` (same results within float32
            rounding); an attribute that can be set later too, as `triton` (the Triton kernels,
            on a GPU; set by `use_triton_ms_deform_attn`).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 fast: bool = False):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) must be divisible by "
                             f"n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.fast = fast
        self.triton = False
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets start independent of the query, head m's
        points on the ray at angle 2 pi m / M (scaled onto the square of half-side 1 pixel),
        point p at p + 1 times that distance; uniform attention weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)  # (M, 2)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        distances = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        offsets = directions[:, None, None, :] * distances[None, None, :, None]  # (M, 1, P, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(
                offsets.expand(self.n_heads, self.n_levels, self.n_points, 2).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor,
                input_flatten: torch.Tensor, spatial_shapes: SpatialShapes,
                level_start_index: LevelStarts) -> torch.Tensor:
        """
        Args:
            query: (B, Lq, C).
            reference_points: (B or 1, Lq, L or 1, 2), (x, y) in [0, 1] as sampling locations.
            input_flatten: (B, S, C), the levels' maps flattened and concatenated.
            spatial_shapes, level_start_index: as `ms_deform_attn_pytorch`.
        Returns:
            (B, Lq, C).
        """
        batch, num_queries, _ = query.shape
        shapes = _size_pairs(spatial_shapes)
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(input_flatten).view(batch, input_flatten.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        # Offsets are in pixels of each level: divide by its (W_l, H_l). Made on the device with
        # fills from Python numbers: a tensor from the host (torch.tensor, or assigning a number
        # into an element) is a host-to-device copy, which a CUDA graph capture refuses.
        normalizer = torch.stack([torch.stack([offsets.new_full((), width), offsets.new_full((), height)])
                                  for height, width in shapes])  # (L, 2)
        sampling_locations = (reference_points[:, :, None, :, None, :]
                              + offsets / normalizer[None, None, None, :, None, :])
        output = ms_deform_attn(value, shapes, level_start_index, sampling_locations, weights,
                                fast=self.fast, triton=self.triton)
        return self.output_proj(output)


def _set_on_every_ms_deform_attn(model: nn.Module, attribute: str, enabled: bool) -> int:
    modules = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    for module in modules:
        setattr(module, attribute, enabled)
    return len(modules)


def use_fast_ms_deform_attn(model: nn.Module, enabled: bool = True) -> int:
    """Sets `fast` on every MSDeformAttn in `model`; returns how many there are."""
    return _set_on_every_ms_deform_attn(model, "fast", enabled)


def use_triton_ms_deform_attn(model: nn.Module, enabled: bool = True) -> int:
    """Sets `triton` on every MSDeformAttn in `model`; returns how many there are."""
    return _set_on_every_ms_deform_attn(model, "triton", enabled)
