"""Semantic inference of a batch as one Triton kernel: upsampling, sigmoid and marginalisation.

`upsampled_semantic_inference` (postprocessing.py) upsamples the (B, Q, h, w) mask logits to the
padded input size (bilinear, align_corners=False), applies the sigmoid and marginalises over the
queries with the class probabilities, einsum("bqc,bqhw->bchw"). Eager, each of the three steps
writes a (B, Q, H, W) or (B, K, H, W) tensor: on an H200 at batch 16 (512x704, bf16) they took
5.4 of a 23.9 ms inference, against about 0.4 ms to write the result once. Here one program
computes a block of output pixels for every query (the four neighbours of each pixel read from
the small (h, w) logits), rounds as the eager steps round (to the masks' dtype after the
interpolation and the sigmoid, to the product's dtype before it), and multiplies by the class
probabilities with tl.dot (float32 products in IEEE precision, not TF32): only the (B, K, H, W)
result is written. The numbers are the eager steps' up to the order of the sum over queries.

Kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1
(tests/test_semantic_inference_triton.py checks them against the eager steps there).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@triton.jit
def _corner(masks_ptr, plane, row, col, width, load_mask):
    """(BLOCK_Q, BLOCK_P) mask logits at source pixel (row, col) of each output pixel."""
    offsets = plane[:, None] + (row * width + col)[None, :]
    return tl.load(masks_ptr + offsets, mask=load_mask, other=0.0).to(tl.float32)


@triton.jit
def _semantic_kernel(probs_ptr, masks_ptr, out_ptr, num_queries, num_classes, height, width,
                     out_height, out_width, scale_h, scale_w,
                     MASK_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    """Program (pixel block, image): probs (B, K, Q) in DOT_DTYPE, masks (B, Q, h, w),
    out (B, K, H, W) in DOT_DTYPE."""
    b = tl.program_id(1)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = p < out_height * out_width
    oy = p // out_width
    ox = p % out_width
    # F.interpolate's source index (align_corners=False): clamped at 0, neighbours clamped at
    # the last row and column, weights in float32 as its CUDA kernel computes them
    sy = tl.maximum((oy.to(tl.float32) + 0.5) * scale_h - 0.5, 0.0)
    sx = tl.maximum((ox.to(tl.float32) + 0.5) * scale_w - 0.5, 0.0)
    y0 = sy.to(tl.int32)
    x0 = sx.to(tl.int32)
    y1 = tl.minimum(y0 + 1, height - 1)
    x1 = tl.minimum(x0 + 1, width - 1)
    ly1 = sy - y0.to(tl.float32)
    lx1 = sx - x0.to(tl.float32)
    ly0 = 1.0 - ly1
    lx0 = 1.0 - lx1

    q = tl.arange(0, BLOCK_Q)
    q_mask = q < num_queries
    plane = (b * num_queries + q).to(tl.int64) * (height * width)  # (BLOCK_Q,)
    load_mask = q_mask[:, None] & p_mask[None, :]
    top = (lx0[None, :] * _corner(masks_ptr, plane, y0, x0, width, load_mask)
           + lx1[None, :] * _corner(masks_ptr, plane, y0, x1, width, load_mask))
    bottom = (lx0[None, :] * _corner(masks_ptr, plane, y1, x0, width, load_mask)
              + lx1[None, :] * _corner(masks_ptr, plane, y1, x1, width, load_mask))
    logits = (ly0[None, :] * top + ly1[None, :] * bottom).to(MASK_DTYPE).to(tl.float32)
    # (BLOCK_Q, BLOCK_P); padded queries meet zero probabilities, padded pixels are not stored
    scores = tl.sigmoid(logits).to(MASK_DTYPE).to(DOT_DTYPE)

    k = tl.arange(0, BLOCK_K)
    for first in range(0, num_classes, BLOCK_K):
        kk = first + k
        k_mask = kk < num_classes
        probs = tl.load(probs_ptr + ((b * num_classes + kk) * num_queries)[:, None] + q[None, :],
                        mask=k_mask[:, None] & q_mask[None, :], other=0.0)
        if IEEE:
            acc = tl.dot(probs, scores, input_precision="ieee")
        else:
            acc = tl.dot(probs, scores)
        out_offsets = ((b * num_classes + kk).to(tl.int64) * (out_height * out_width))[:, None] \
            + p[None, :]
        tl.store(out_ptr + out_offsets, acc.to(DOT_DTYPE), mask=k_mask[:, None] & p_mask[None, :])


def semantic_inference_triton(mask_cls: torch.Tensor, mask_pred: torch.Tensor,
                              size: Tuple[int, int]) -> torch.Tensor:
    """`upsampled_semantic_inference` as one kernel: (B, Q, K+1) class logits, (B, Q, h, w) mask
    logits, size (H, W) -> (B, K, H, W) scores, in the dtype the eager steps give (the autocast
    dtype under autocast, else float32). Other dtypes (float64) raise a ValueError that names the
    key turning the kernel off."""
    autocast = torch.is_autocast_enabled(mask_pred.device.type)
    dot_dtype = torch.get_autocast_dtype(mask_pred.device.type) if autocast else mask_pred.dtype
    if mask_pred.dtype not in _TL_DTYPES or dot_dtype not in _TL_DTYPES:
        raise ValueError(f"semantic_inference_triton: mask logits of dtype {mask_pred.dtype} "
                         f"(products in {dot_dtype}) are for the eager steps: set "
                         "ACCELERATION.TRITON_SEMANTIC_INFERENCE False")
    # The class probabilities exactly as the eager einsum receives them: softmax (float32 under
    # autocast), "no object" dropped, cast to the product's dtype.
    probs = F.softmax(mask_cls, dim=-1)[..., :-1].to(dot_dtype).transpose(1, 2).contiguous()
    masks = mask_pred.contiguous()
    batch, queries, height, width = masks.shape
    num_classes = probs.shape[1]
    out_height, out_width = size
    out = torch.empty(batch, num_classes, out_height, out_width, device=masks.device,
                      dtype=dot_dtype)
    if out.numel() == 0:
        return out
    block_p = 64
    grid = (triton.cdiv(out_height * out_width, block_p), batch)
    _semantic_kernel[grid](
        probs, masks, out, queries, num_classes, height, width, out_height, out_width,
        height / out_height, width / out_width,
        MASK_DTYPE=_TL_DTYPES[masks.dtype], DOT_DTYPE=_TL_DTYPES[dot_dtype],
        IEEE=dot_dtype == torch.float32, BLOCK_P=block_p,
        BLOCK_Q=max(16, triton.next_power_of_2(queries)), BLOCK_K=64, num_warps=4)
    return out
