"""Semantic inference's upsampling and sigmoid as one Triton kernel (upsampling_triton.py)
against F.interpolate + sigmoid: in Triton's interpreter on the CPU, and on a GPU."""
import pytest
import torch
import torch.nn.functional as F

from helpers import run_in_triton_interpreter

# (B, Q, h, w) logits -> size: the recipes' 4x factor, uneven factors, downsampling, one pixel,
# and tiles that overhang the maps.
CASES = [((2, 3, 8, 11), (32, 44)), ((1, 2, 5, 7), (13, 29)), ((2, 2, 16, 16), (8, 8)),
         ((1, 1, 1, 1), (3, 4)), ((1, 2, 9, 3), (17, 130))]

CHECK = """
import torch
import torch.nn.functional as F
from mask_former.modeling.upsampling_triton import upsampled_sigmoid
torch.manual_seed(0)
for shape, size in CASES:
    for dtype in DTYPES:
        x = (3 * torch.randn(shape, device=DEVICE)).to(dtype)
        # As CUDA's kernels compute it: upsampled in float32 and rounded once (CPU's half path
        # rounds in between), then the sigmoid in float32, rounded.
        upsampled = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
        expected = upsampled.to(dtype).float().sigmoid().to(dtype)
        if DEVICE == "cuda":  # and the eager steps themselves
            eager = F.interpolate(x, size=size, mode="bilinear", align_corners=False).sigmoid()
            assert torch.equal(eager, expected), (shape, size, dtype)
        got = upsampled_sigmoid(x, size, block_h=4, block_w=16)
        assert got.dtype == dtype and got.shape == expected.shape, (got.dtype, got.shape)
        error = (got.double() - expected.double()).abs()
        # float32: a few roundings apart (exp and the weights' products); float16 and
        # bfloat16: the same value, or (exp's rounding near a tie) the next one
        bound = FLOAT32_BOUND if dtype == torch.float32 else 2.0 ** -8
        assert error.max().item() <= bound, (shape, size, dtype, error.max().item())
        if dtype != torch.float32:
            assert (error > 0).double().mean().item() < 0.01, (shape, size, dtype)
print("ok")
"""


def test_upsampled_sigmoid_matches_interpolate_in_the_triton_interpreter():
    """float32 and float16 (the interpreter rounds bfloat16 by truncation, unlike a GPU)."""
    pytest.importorskip("triton")
    script = ("import torch\n" f"CASES = {CASES!r}\nDEVICE = 'cpu'\nFLOAT32_BOUND = 4e-7\n"
              "DTYPES = (torch.float32, torch.float16)\n" + CHECK)
    run_in_triton_interpreter(script)


def test_upsampled_sigmoid_rejects_maps_of_another_rank():
    pytest.importorskip("triton")
    from mask_former.modeling.upsampling_triton import upsampled_sigmoid

    with pytest.raises(ValueError, match=r"\(B, Q, h, w\)"):
        upsampled_sigmoid(torch.zeros(3, 4, 4), (8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_upsampled_sigmoid_and_semantic_maps_match_eager_on_gpu():
    """The kernel in float32, bfloat16 and float16 on the GPU, and under bf16 autocast (where
    F.interpolate runs in float32); semantic_maps_triton against semantic_maps at the recipe's
    inference size (512 x 704, 100 queries, 150 classes), in float32 and under bf16 autocast."""
    from mask_former.modeling.postprocessing import semantic_maps
    from mask_former.modeling.upsampling_triton import semantic_maps_triton, upsampled_sigmoid

    namespace = {"CASES": CASES, "DEVICE": "cuda", "FLOAT32_BOUND": 1e-6,
                 "DTYPES": (torch.float32, torch.bfloat16, torch.float16)}
    exec(CHECK, namespace)
    generator = torch.Generator(device="cuda").manual_seed(0)
    mask_cls = torch.randn(2, 100, 151, device="cuda", generator=generator)
    mask_pred = 3 * torch.randn(2, 100, 128, 176, device="cuda", generator=generator)
    size = (512, 704)
    logits = mask_pred.bfloat16()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).sigmoid()
        assert eager.dtype == torch.float32  # the semantics the kernel follows under autocast
        got = upsampled_sigmoid(logits, size)
        assert got.dtype == torch.float32
        assert (got - eager).abs().max().item() <= 1e-6
        rounded = upsampled_sigmoid(logits, size, torch.bfloat16)
        error = (rounded.double() - eager.bfloat16().double()).abs()
        assert error.max().item() <= 2.0 ** -8 and (error > 0).double().mean().item() < 0.01
    for bf16 in (False, True):
        logits = mask_pred.bfloat16() if bf16 else mask_pred
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            expected = semantic_maps(mask_cls, logits, size)
            got = semantic_maps_triton(mask_cls, logits, size)
        assert got.dtype == expected.dtype and got.shape == expected.shape == (2, 150, 512, 704)
        error = (got.double() - expected.double()).abs()
        if bf16:  # the same bf16 probabilities, or (exp's rounding near a tie) the next ones
            assert error.max().item() <= 2.0 ** -7 and (error > 0).double().mean().item() < 0.05
        else:
            assert error.max().item() <= 1e-6
