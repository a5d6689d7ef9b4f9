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
(100 queries), which cuBLAS runs well below the memory's rate and, in float32, on the CUDA cores
(about 27 TFLOP/s); the second kernel reads each tile of probabilities once for all classes.

`upsampled_sigmoid` computes what F.interpolate (bilinear, align_corners=False, an output size
and no scale factor) and the sigmoid compute: the same source coordinates and weights in
float32, the upsampled logit rounded to the logits' dtype where F.interpolate writes it so, and
the sigmoid as 1 / (1 + exp(-x)) in float32. `marginalise_triton` accumulates in float32 as
cuBLAS does; float32 products take three TF32 products (the operands split into a high and a
low part), whose error is float32 rounding's order. Both equal the eager steps up to float32
rounding, tests/test_semantic_maps_triton.py.

Kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from torch.nn import functional as F


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
                        PRECISION: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_Q: tl.constexpr,
                        BLOCK_P: tl.constexpr):
    """Program (pixel block, image) over cls (B, Q, K) (any strides), probs (B, Q, P) and
    out (B, K, P): out[b, :, p] = cls[b]^T probs[b, :, p], a block of classes at a time, so that
    the programs of a pixel block read its probabilities from memory once."""
    image = tl.program_id(1).to(tl.int64)
    pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    in_pixels = pixel < pixels
    cls_base = cls_ptr + image * cls_batch_stride
    probs_base = probs_ptr + image * queries * pixels  # 32-bit offsets within an image
    out_base = out_ptr + image * classes * pixels
    for k0 in range(0, classes, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_K, BLOCK_P), dtype=tl.float32)
        for q0 in range(0, queries, BLOCK_Q):
            q = q0 + tl.arange(0, BLOCK_Q)
            a = tl.load(cls_base + q[None, :] * cls_query_stride + k[:, None] * cls_class_stride,
                        mask=(k < classes)[:, None] & (q < queries)[None, :], other=0.0)
            b = tl.load(probs_base + q[:, None] * pixels + pixel[None, :],
                        mask=(q < queries)[:, None] & in_pixels[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        tl.store(out_base + k[:, None] * pixels + pixel[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=(k < classes)[:, None] & in_pixels[None, :])


def marginalise_triton(mask_cls: torch.Tensor, mask_probs: torch.Tensor, block_k: int = 64,
                       block_p: int = 128, num_warps: int = 4,
                       precision: str = "tf32x3") -> torch.Tensor:
    """postprocessing.marginalise: (B, Q, K+1) class logits, (B, Q, H, W) mask probabilities ->
    (B, K, H, W) scores, in the dtype of eager's product (under CUDA autocast, autocast's).
    `precision`: float32 products' tl.dot input precision ("tf32x3", or "ieee": exact float32
    arithmetic on the CUDA cores)."""
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
    cls = F.softmax(mask_cls, dim=-1)[..., :-1].to(dtype)  # (B, Q, K), as eager rounds it
    probs = mask_probs.to(dtype).contiguous()
    out = torch.empty((batch, classes, height, width), dtype=dtype, device=probs.device)
    if out.numel() == 0:
        return out
    block_q = max(16, min(128, triton.next_power_of_2(queries)))
    grid = (triton.cdiv(pixels, block_p), batch)
    _marginalise_kernel[grid](cls, probs, out, classes, queries, pixels, *cls.stride(),
                              # (16-bit operands take Triton's default, their own precision)
                              PRECISION=precision if dtype == torch.float32 else "tf32",
                              BLOCK_K=block_k, BLOCK_Q=block_q, BLOCK_P=block_p,
                              num_warps=num_warps)
    return out


def semantic_maps_triton(mask_cls: torch.Tensor, mask_pred: torch.Tensor, size: Tuple[int, int]
                         ) -> torch.Tensor:
    """postprocessing.semantic_maps as the two kernels: (B, Q, K+1) class logits, (B, Q, h, w)
    mask logits -> (B, K, H, W) scores. Under CUDA autocast the probabilities are written in
    autocast's dtype, which the product casts them to in eager (one rounding either way)."""
    autocast = mask_pred.is_cuda and torch.is_autocast_enabled("cuda")
    dtype = torch.get_autocast_dtype("cuda") if autocast else None
    return marginalise_triton(mask_cls, upsampled_sigmoid(mask_pred, size, dtype))
