"""Semantic inference's maps as Triton kernels: the bilinear upsampling of the mask logits to the
padded input size with their sigmoid, and the marginalisation of those mask probabilities with
the class probabilities.

Eager, `semantic_maps` upsamples (B, Q, h, w) logits with F.interpolate and writes them, reads
them back for the sigmoid and writes the probabilities, which the product with the class
probabilities then reads (under bf16 autocast after one more pass that casts them: the
upsampling runs in float32 there). At batch 16 of 512 x 704 inputs with 100 queries each pass
is 1.2 GB (bfloat16) or 2.3 GB (float32); PyTorch's bilinear kernel for channel-first maps also
loops over batch and channels inside each thread, one thread per output pixel. The first kernel
gives each program a tile of one map and writes the probabilities once, in the dtype the product
reads. The product is a batched (K, Q) x (Q, H*W) matrix product with a short inner dimension
(100 queries), which cuBLAS runs in 16 bits well below the memory's rate; the second kernel
reads each tile of probabilities once for all classes (batch 16 in bfloat16 on one H200:
1.2 ms against cuBLAS's 2.1). In float32 cuBLAS runs it on the CUDA cores, exactly, and a
Triton product no faster (TF32 splits, or plain float32 arithmetic, far slower): float32 keeps
cuBLAS.

`upsampled_sigmoid` computes what F.interpolate (bilinear, align_corners=False, an output size
and no scale factor) and the sigmoid compute: the same source coordinates and weights in
float32, the upsampled logit rounded to the logits' dtype where F.interpolate writes it so, and
the sigmoid as 1 / (1 + exp(-x)) in float32. `marginalise_triton` accumulates in float32 as
cuBLAS does and rounds once to 16 bits. Both equal the eager steps up to rounding,
tests/test_semantic_maps_triton.py.

Kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from torch.nn import functional as F

from .postprocessing import marginalise


@triton.jit
def _source(index, scale, size):
    """F.interpolate's source of output `index` (align_corners=False): the lower input index,
    the upper one (clamped to the input) and the upper one's weight."""
    src = tl.maximum(scale * (index.to(tl.float32) + 0.5) - 0.5, 0.0)
    lower = src.to(tl.int32)  # src >= 0: truncation is the floor
    upper = tl.where(lower < size - 1, lower + 1, lower)
    return lower, upper, src - lower.to(tl.float32)


@triton.jit
def _upsampled_sigmoid_kernel(x_ptr, out_ptr, h, w, height, width, scale_h, scale_w,
                              ROUND_LOGITS: tl.constexpr, BLOCK_H: tl.constexpr,
                              BLOCK_W: tl.constexpr):
    """Program (map, row block, column block) over x (N, h, w) and out (N, height, width);
    ROUND_LOGITS: the upsampled logits rounded to x's dtype before the sigmoid."""
    plane = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    y0, y1, ly = _source(rows, scale_h, h)
    x0, x1, lx = _source(cols, scale_w, w)
    inside = (rows < height)[:, None] & (cols < width)[None, :]
    base = x_ptr + plane * h * w  # 64-bit plane offsets once; 32-bit offsets within a map
    top, bottom = base + (y0 * w)[:, None], base + (y1 * w)[:, None]
    a = tl.load(top + x0[None, :], mask=inside, other=0.0).to(tl.float32)
    b = tl.load(top + x1[None, :], mask=inside, other=0.0).to(tl.float32)
    c = tl.load(bottom + x0[None, :], mask=inside, other=0.0).to(tl.float32)
    d = tl.load(bottom + x1[None, :], mask=inside, other=0.0).to(tl.float32)
    wx1 = lx[None, :]
    wx0 = 1.0 - wx1
    wy1 = ly[:, None]
    logit = (1.0 - wy1) * (wx0 * a + wx1 * b) + wy1 * (wx0 * c + wx1 * d)
    if ROUND_LOGITS:
        logit = logit.to(x_ptr.dtype.element_ty).to(tl.float32)
    # Triton's exp and division are the GPU's fast approximations: a few float32 ulps from
    # PyTorch's sigmoid, for fewer instructions than IEEE division.
    probability = 1.0 / (1.0 + tl.exp(-logit))
    offsets = (rows * width)[:, None] + cols[None, :]
    tl.store(out_ptr + plane * height * width + offsets,
             probability.to(out_ptr.dtype.element_ty), mask=inside)


def upsampled_sigmoid(mask_pred: torch.Tensor, size: Tuple[int, int],
                      dtype: Optional[torch.dtype] = None, block_h: int = 16, block_w: int = 64,
                      num_warps: int = 4) -> torch.Tensor:
    """sigmoid(F.interpolate(mask_pred, size, mode="bilinear", align_corners=False)) as eager
    computes it: (B, Q, h, w) mask logits -> (B, Q, H, W) probabilities, written in `dtype`
    (default: the dtype of eager's result). Under CUDA autocast F.interpolate runs in float32
    (it is on autocast's float32 list), so the upsampled logits are not rounded to mask_pred's
    dtype there."""
    if mask_pred.dim() != 4:
        raise ValueError(f"upsampled_sigmoid takes (B, Q, h, w) mask logits, got shape "
                         f"{tuple(mask_pred.shape)}")
    batch, queries, h, w = mask_pred.shape
    height, width = (int(s) for s in size)
    x = mask_pred.contiguous()
    autocast = x.is_cuda and torch.is_autocast_enabled("cuda")
    logit_dtype = torch.float32 if autocast else x.dtype
    out = torch.empty((batch, queries, height, width), dtype=dtype or logit_dtype,
                      device=x.device)
    if out.numel() == 0:
        return out
    # The scales as F.interpolate takes them from the sizes: input / output, in float32.
    scale_h, scale_w = h / height, w / width
    grid = (batch * queries, triton.cdiv(height, block_h), triton.cdiv(width, block_w))
    _upsampled_sigmoid_kernel[grid](x, out, h, w, height, width, scale_h, scale_w,
                                    ROUND_LOGITS=logit_dtype != torch.float32,
                                    BLOCK_H=block_h, BLOCK_W=block_w, num_warps=num_warps)
    return out


@triton.jit
def _marginalise_kernel(cls_ptr, probs_ptr, out_ptr, classes, queries, pixels,
                        cls_batch_stride, cls_query_stride, cls_class_stride,
                        ONE_QUERY_BLOCK: tl.constexpr,
                        BLOCK_K: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (pixel block, image) over cls (B, Q, K) (any strides), probs (B, Q, P) and
    out (B, K, P): out[b, :, p] = cls[b]^T probs[b, :, p], a block of classes at a time, so that
    the programs of a pixel block read its probabilities from memory once. ONE_QUERY_BLOCK
    (Q <= BLOCK_Q): the probabilities' tile is loaded once for all class blocks."""
    image = tl.program_id(1).to(tl.int64)
    pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    in_pixels = pixel < pixels
    cls_base = cls_ptr + image * cls_batch_stride
    probs_base = probs_ptr + image * queries * pixels  # 32-bit offsets within an image
    out_base = out_ptr + image * classes * pixels
    if ONE_QUERY_BLOCK:
        q = tl.arange(0, BLOCK_Q)
        tile = tl.load(probs_base + q[:, None] * pixels + pixel[None, :],
                       mask=(q < queries)[:, None] & in_pixels[None, :], other=0.0)
    for k0 in range(0, classes, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_K, BLOCK_P), dtype=tl.float32)
        if ONE_QUERY_BLOCK:
            a = tl.load(cls_base + q[None, :] * cls_query_stride + k[:, None] * cls_class_stride,
                        mask=(k < classes)[:, None] & (q < queries)[None, :], other=0.0)
            acc = tl.dot(a, tile, acc)
        else:
            for q0 in range(0, queries, BLOCK_Q):
                q = q0 + tl.arange(0, BLOCK_Q)
                a = tl.load(cls_base + q[None, :] * cls_query_stride
                            + k[:, None] * cls_class_stride,
                            mask=(k < classes)[:, None] & (q < queries)[None, :], other=0.0)
                b = tl.load(probs_base + q[:, None] * pixels + pixel[None, :],
                            mask=(q < queries)[:, None] & in_pixels[None, :], other=0.0)
                acc = tl.dot(a, b, acc)
        tl.store(out_base + k[:, None] * pixels + pixel[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=(k < classes)[:, None] & in_pixels[None, :])


def marginalise_triton(mask_cls: torch.Tensor, mask_probs: torch.Tensor, block_k: int = 64,
                       block_p: int = 128, block_q: Optional[int] = None, num_warps: int = 4,
                       num_stages: int = 1) -> torch.Tensor:
    """postprocessing.marginalise in 16 bits: (B, Q, K+1) class logits, (B, Q, H, W) bfloat16 or
    float16 mask probabilities (or any, under CUDA autocast to one of those) -> (B, K, H, W)
    scores in that dtype, accumulated in float32 as cuBLAS does. `block_q`: queries per product
    (default: all of them, up to 128, whose probabilities are then read once for all classes).
    Float32 is refused: cuBLAS's product is faster there than this kernel's TF32 splits
    (docs/benchmarks.md, the eleventh round) and exact."""
    if mask_cls.dim() != 3 or mask_probs.dim() != 4 or mask_cls.shape[:2] != mask_probs.shape[:2]:
        raise ValueError(f"marginalise_triton takes (B, Q, K+1) class logits and (B, Q, H, W) "
                         f"probabilities, got shapes {tuple(mask_cls.shape)} and "
                         f"{tuple(mask_probs.shape)}")
    batch, queries, height, width = mask_probs.shape
    classes, pixels = mask_cls.shape[-1] - 1, height * width
    if max(queries, classes) * pixels >= 2 ** 31:
        raise ValueError(f"marginalise_triton: {queries} queries, {classes} classes and "
                         f"{height} x {width} pixels overflow the kernel's 32-bit offsets")
    autocast = mask_probs.is_cuda and torch.is_autocast_enabled("cuda")
    dtype = torch.get_autocast_dtype("cuda") if autocast else mask_probs.dtype
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"marginalise_triton takes bfloat16 or float16 probabilities, got "
                         f"{dtype}: postprocessing.marginalise is the float32 product")
    cls = F.softmax(mask_cls, dim=-1)[..., :-1].to(dtype)  # (B, Q, K), as eager rounds it
    probs = mask_probs.to(dtype).contiguous()
    out = torch.empty((batch, classes, height, width), dtype=dtype, device=probs.device)
    if out.numel() == 0:
        return out
    block_q = block_q or max(16, min(128, triton.next_power_of_2(queries)))
    grid = (triton.cdiv(pixels, block_p), batch)
    _marginalise_kernel[grid](cls, probs, out, classes, queries, pixels, *cls.stride(),
                              ONE_QUERY_BLOCK=queries <= block_q, BLOCK_K=block_k,
                              BLOCK_Q=block_q, BLOCK_P=block_p, num_warps=num_warps,
                              num_stages=num_stages)
    return out


def semantic_maps_triton(mask_cls: torch.Tensor, mask_pred: torch.Tensor, size: Tuple[int, int]
                         ) -> torch.Tensor:
    """postprocessing.semantic_maps as the two kernels: (B, Q, K+1) class logits, (B, Q, h, w)
    mask logits -> (B, K, H, W) scores. Under CUDA autocast the probabilities are written in
    autocast's dtype, which the product casts them to in eager (one rounding either way); float32
    probabilities take the eager (cuBLAS) product."""
    autocast = mask_pred.is_cuda and torch.is_autocast_enabled("cuda")
    dtype = torch.get_autocast_dtype("cuda") if autocast else None
    probs = upsampled_sigmoid(mask_pred, size, dtype)
    if probs.dtype == torch.float32:
        return marginalise(mask_cls, probs)
    return marginalise_triton(mask_cls, probs)
