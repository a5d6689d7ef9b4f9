"""Multi-scale deformable attention as Triton kernels, forward and backward.

The same function as `ms_deform_attn_pytorch` (bilinear sampling with zero padding, as
`grid_sample(align_corners=False)`, weighted and summed over levels and points), computed the way
the official CUDA op does: values stay in their (B, S, M, D) layout, so the D channels of a head
at a pixel are contiguous. The pure path's grid_sample works on channel-first maps and its
backward scatters each sample's gradient with D strided atomics; here a sample's D channels are
one contiguous atomic add. Everything is accumulated in float32; values of another dtype are
read as float32, as autocast's grid_sample does.

Kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 (how the tests check them
where there is no GPU).
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _corner(value_ptr, base, row, col, height, width, start, heads, channels, d, d_mask):
    """(BLOCK_Q, BLOCK_D) values at integer pixel (row, col) of a level, 0 outside; and their
    offsets and validity (for the backward's scatter)."""
    valid = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    pixel = start + row * width + col
    offsets = base[:, None] + (pixel[:, None] * heads) * channels + d[None, :]
    mask = valid[:, None] & d_mask[None, :]
    return tl.load(value_ptr + offsets, mask=mask, other=0.0).to(tl.float32), offsets, mask


@triton.jit
def _program(num_queries, total, heads, channels, LEVELS: tl.constexpr, POINTS: tl.constexpr,
             BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's block of queries of one (image, head), and its offsets: program (query
    block, batch * head) over value (B, S, M, D), loc (B, Lq, M, L, P, 2), attn (B, Lq, M, L, P),
    out (B, Lq, M, D)."""
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    bm = tl.program_id(1)
    b = bm // heads
    m = bm % heads
    d = tl.arange(0, BLOCK_D)
    # value offset of (b, pixel 0, m, channel 0); each corner adds its pixel
    base = tl.zeros([BLOCK_Q], dtype=tl.int64) + (b.to(tl.int64) * total * heads + m) * channels
    point_index = ((b * num_queries + q) * heads + m) * (LEVELS * POINTS)  # (BLOCK_Q,)
    out_offsets = (((b * num_queries + q) * heads + m) * channels)[:, None] + d[None, :]
    return q < num_queries, d, d < channels, base, point_index, out_offsets


@triton.jit
def _sample_point(value_ptr, loc_ptr, attn_ptr, index, q_mask, base, height, width, start,
                  heads, channels, d, d_mask):
    """One sampling point of each query: its attention weight, its bilinear sample (BLOCK_Q,
    BLOCK_D), its fractional position (lx, ly) between pixel centres, and its four neighbours'
    values, offsets and validity."""
    loc_x = tl.load(loc_ptr + 2 * index, mask=q_mask, other=-2.0).to(tl.float32)
    loc_y = tl.load(loc_ptr + 2 * index + 1, mask=q_mask, other=-2.0).to(tl.float32)
    a = tl.load(attn_ptr + index, mask=q_mask, other=0.0).to(tl.float32)
    # grid_sample's pixel coordinates (align_corners=False): pixel centres at integers
    x = loc_x * width - 0.5
    y = loc_y * height - 0.5
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    v00, o00, k00 = _corner(value_ptr, base, y0, x0, height, width, start, heads, channels, d, d_mask)
    v01, o01, k01 = _corner(value_ptr, base, y0, x0 + 1, height, width, start, heads, channels, d, d_mask)
    v10, o10, k10 = _corner(value_ptr, base, y0 + 1, x0, height, width, start, heads, channels, d, d_mask)
    v11, o11, k11 = _corner(value_ptr, base, y0 + 1, x0 + 1, height, width, start, heads, channels, d, d_mask)
    lx = x - x0f
    ly = y - y0f
    sampled = ((1 - ly) * (1 - lx))[:, None] * v00 + ((1 - ly) * lx)[:, None] * v01 \
        + (ly * (1 - lx))[:, None] * v10 + (ly * lx)[:, None] * v11
    return a, sampled, lx, ly, v00, v01, v10, v11, o00, o01, o10, o11, k00, k01, k10, k11


@triton.jit
def _ms_deform_attn_forward(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                            num_queries, total, heads, channels,
                            LEVELS: tl.constexpr, POINTS: tl.constexpr,
                            BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    q_mask, d, d_mask, base, point_index, out_offsets = _program(
        num_queries, total, heads, channels, LEVELS, POINTS, BLOCK_Q, BLOCK_D)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
    for level in tl.static_range(LEVELS):
        height = tl.load(shapes_ptr + 2 * level)
        width = tl.load(shapes_ptr + 2 * level + 1)
        start = tl.load(starts_ptr + level)
        for point in tl.static_range(POINTS):
            a, sampled, _, _, _, _, _, _, _, _, _, _, _, _, _, _ = _sample_point(
                value_ptr, loc_ptr, attn_ptr, point_index + level * POINTS + point, q_mask, base,
                height, width, start, heads, channels, d, d_mask)
            acc += a[:, None] * sampled
    tl.store(out_ptr + out_offsets, acc, mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def _ms_deform_attn_backward(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
                             grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
                             num_queries, total, heads, channels,
                             LEVELS: tl.constexpr, POINTS: tl.constexpr,
                             BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    q_mask, d, d_mask, base, point_index, out_offsets = _program(
        num_queries, total, heads, channels, LEVELS, POINTS, BLOCK_Q, BLOCK_D)
    grad_out = tl.load(grad_out_ptr + out_offsets, mask=q_mask[:, None] & d_mask[None, :],
                       other=0.0).to(tl.float32)
    for level in tl.static_range(LEVELS):
        height = tl.load(shapes_ptr + 2 * level)
        width = tl.load(shapes_ptr + 2 * level + 1)
        start = tl.load(starts_ptr + level)
        for point in tl.static_range(POINTS):
            index = point_index + level * POINTS + point
            a, sampled, lx, ly, v00, v01, v10, v11, o00, o01, o10, o11, k00, k01, k10, k11 = \
                _sample_point(value_ptr, loc_ptr, attn_ptr, index, q_mask, base, height, width,
                              start, heads, channels, d, d_mask)
            hx = 1 - lx
            hy = 1 - ly
            # d out / d attention weight = the sample
            tl.store(grad_attn_ptr + index, tl.sum(grad_out * sampled, 1), mask=q_mask)
            # d out / d location, through the corner weights (x = loc_x * W - 0.5)
            d_x = hy[:, None] * (v01 - v00) + ly[:, None] * (v11 - v10)
            d_y = hx[:, None] * (v10 - v00) + lx[:, None] * (v11 - v01)
            tl.store(grad_loc_ptr + 2 * index, a * tl.sum(grad_out * d_x, 1) * width, mask=q_mask)
            tl.store(grad_loc_ptr + 2 * index + 1, a * tl.sum(grad_out * d_y, 1) * height,
                     mask=q_mask)
            # d out / d value: each corner gets its weight times the output gradient
            weighted = a[:, None] * grad_out
            tl.atomic_add(grad_value_ptr + o00, (hy * hx)[:, None] * weighted, mask=k00)
            tl.atomic_add(grad_value_ptr + o01, (hy * lx)[:, None] * weighted, mask=k01)
            tl.atomic_add(grad_value_ptr + o10, (ly * hx)[:, None] * weighted, mask=k10)
            tl.atomic_add(grad_value_ptr + o11, (ly * lx)[:, None] * weighted, mask=k11)


BLOCK_Q = 32


def _level_tensors(value: torch.Tensor, shapes, starts):
    """The levels' (H, W) and starts as int32 device tensors, made by fills (no host copy, which a
    CUDA graph capture refuses)."""
    def fill(number):
        return value.new_full((), number, dtype=torch.int32)
    shape_tensor = torch.stack([fill(n) for hw in shapes for n in hw])
    start_tensor = torch.stack([fill(s) for s in starts])
    return shape_tensor, start_tensor


class MSDeformAttnFunction(torch.autograd.Function):
    """(B, S, M, D) values, levels' sizes and starts (int lists), (B, Lq, M, L, P, 2) locations,
    (B, Lq, M, L, P) weights -> (B, Lq, M * D) float32."""

    @staticmethod
    def forward(ctx, value, shapes, starts, sampling_locations, attention_weights):
        value = value.contiguous()
        sampling_locations = sampling_locations.contiguous()
        attention_weights = attention_weights.contiguous()
        batch, total, heads, channels = value.shape
        _, num_queries, _, levels, points, _ = sampling_locations.shape
        shape_tensor, start_tensor = _level_tensors(value, shapes, starts)
        output = value.new_empty((batch, num_queries, heads, channels), dtype=torch.float32)
        grid = (triton.cdiv(num_queries, BLOCK_Q), batch * heads)
        block_d = triton.next_power_of_2(channels)
        _ms_deform_attn_forward[grid](value, shape_tensor, start_tensor, sampling_locations,
                                      attention_weights, output, num_queries, total, heads,
                                      channels, LEVELS=levels, POINTS=points, BLOCK_Q=BLOCK_Q,
                                      BLOCK_D=block_d)
        ctx.save_for_backward(value, shape_tensor, start_tensor, sampling_locations, attention_weights)
        return output.view(batch, num_queries, heads * channels)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        value, shape_tensor, start_tensor, locations, weights = ctx.saved_tensors
        batch, total, heads, channels = value.shape
        _, num_queries, _, levels, points, _ = locations.shape
        grad_output = grad_output.contiguous()
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_locations = torch.empty(locations.shape, dtype=torch.float32, device=value.device)
        grad_weights = torch.empty(weights.shape, dtype=torch.float32, device=value.device)
        grid = (triton.cdiv(num_queries, BLOCK_Q), batch * heads)
        _ms_deform_attn_backward[grid](value, shape_tensor, start_tensor, locations, weights,
                                       grad_output, grad_value, grad_locations, grad_weights,
                                       num_queries, total, heads, channels, LEVELS=levels,
                                       POINTS=points, BLOCK_Q=BLOCK_Q,
                                       BLOCK_D=triton.next_power_of_2(channels))
        return (grad_value.to(value.dtype), None, None, grad_locations.to(locations.dtype),
                grad_weights.to(weights.dtype))


def ms_deform_attn_triton(value, shapes, starts, sampling_locations, attention_weights):
    """`ms_deform_attn_pytorch`'s function through the Triton kernels; shapes and starts as ints."""
    return MSDeformAttnFunction.apply(value, [tuple(hw) for hw in shapes], list(starts),
                                      sampling_locations, attention_weights)
