"""Semantic inference's maps as Triton kernels (semantic_maps_triton.py): the upsampling and
sigmoid against F.interpolate + sigmoid, the marginalisation against postprocessing.marginalise;
in Triton's interpreter on the CPU, and on a GPU."""
import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, run_in_triton_interpreter

# (B, Q, h, w) logits -> size: the recipes' 4x factor, uneven factors, downsampling, one pixel,
# and tiles that overhang the maps.
CASES = [((2, 3, 8, 11), (32, 44)), ((1, 2, 5, 7), (13, 29)), ((2, 2, 16, 16), (8, 8)),
         ((1, 1, 1, 1), (3, 4)), ((1, 2, 9, 3), (17, 130))]

CHECK = """
import torch
import torch.nn.functional as F
from mask_former.modeling.semantic_maps_triton import upsampled_sigmoid
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
              "DTYPES = (torch.float16,)\n" + CHECK)
    run_in_triton_interpreter(script)


# (B, Q, K+1, H, W): queries and classes that fill no block, more than one block of each (the
# kernel's loops), and pixels that overhang the last pixel block.
MARGINAL_CASES = [(2, 5, 4, 6, 7), (1, 130, 70, 3, 50), (2, 100, 151, 4, 33), (1, 1, 2, 1, 1)]

MARGINAL_CHECK = """
import torch
from mask_former.modeling.postprocessing import marginalise
from mask_former.modeling.semantic_maps_triton import marginalise_triton
torch.manual_seed(0)
for b, q, k, h, w in MARGINAL_CASES:
    cls = 3 * torch.randn(b, q, k, device=DEVICE)
    probs = torch.rand(b, q, h, w, device=DEVICE)
    expected = marginalise(cls.double(), probs.double())
    for dtype in DTYPES:
        got = marginalise_triton(cls, probs.to(dtype), **BLOCKS)
        assert got.dtype == dtype and got.shape == (b, k - 1, h, w), (got.dtype, got.shape)
        error = (got.double() - expected).abs().max().item()
        # the eager product's own error in this dtype, and one rounding of the largest score
        # (with one or two queries the eager error can be near zero by luck)
        eager = (marginalise(cls.to(dtype), probs.to(dtype)).double() - expected).abs().max()
        bound = 2 * eager.item() + torch.finfo(dtype).eps * expected.abs().max().item()
        assert error <= bound, (b, q, k, h, w, dtype, error, eager.item())
print("ok")
"""


def test_upsampled_sigmoid_rejects_maps_of_another_rank():
    pytest.importorskip("triton")
    from mask_former.modeling.semantic_maps_triton import upsampled_sigmoid

    with pytest.raises(ValueError, match=r"\(B, Q, h, w\)"):
        upsampled_sigmoid(torch.zeros(3, 4, 4), (8, 8))


def test_marginalise_matches_eager_in_the_triton_interpreter():
    """float16 against a float64 marginalise: no farther from it than twice the
    eager product's error in the same dtype plus one rounding of the largest score."""
    pytest.importorskip("triton")
    script = (f"import torch\nMARGINAL_CASES = {MARGINAL_CASES!r}\nDEVICE = 'cpu'\n"
              "DTYPES = (torch.float16,)\n"
              "BLOCKS = dict(block_k=16, block_p=16)\n" + MARGINAL_CHECK)
    run_in_triton_interpreter(script)


def test_marginalise_rejects_mismatched_shapes_and_float32():
    pytest.importorskip("triton")
    from mask_former.modeling.semantic_maps_triton import marginalise_triton

    with pytest.raises(ValueError, match=r"\(B, Q, K\+1\) class logits"):
        marginalise_triton(torch.zeros(2, 3, 5), torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="bfloat16 or float16 probabilities, got torch.float32"):
        marginalise_triton(torch.zeros(2, 3, 5), torch.zeros(2, 3, 8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_upsampled_sigmoid_and_semantic_maps_match_eager_on_gpu():
    """The kernel in float32, bfloat16 and float16 on the GPU, and under bf16 autocast (where
    F.interpolate runs in float32); semantic_maps_triton against semantic_maps at the recipe's
    inference size (512 x 704, 100 queries, 150 classes), in float32 and under bf16 autocast;
    marginalise_triton with its default blocks and with a loop over query blocks against a
    float64 marginalise, as in the interpreter, in bfloat16 and float16."""
    from mask_former.modeling.postprocessing import semantic_maps
    from mask_former.modeling.semantic_maps_triton import semantic_maps_triton, upsampled_sigmoid

    namespace = {"CASES": CASES, "DEVICE": "cuda", "FLOAT32_BOUND": 1e-6,
                 "DTYPES": (torch.float32, torch.bfloat16, torch.float16)}
    exec(CHECK, namespace)
    for blocks in ({}, {"block_q": 32, "num_stages": 2}):  # the defaults; a loop over queries
        exec(MARGINAL_CHECK, {"MARGINAL_CASES": MARGINAL_CASES, "DEVICE": "cuda",
                              "BLOCKS": blocks,
                              "DTYPES": (torch.bfloat16, torch.float16)})
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
        else:  # float32: the kernel's probabilities, then the eager (cuBLAS) product
            assert error.max().item() <= 1e-6


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a CUDA GPU")
def test_maps_benchmark_without_a_gpu_says_so_in_one_line():
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, str(ROOT / "tools/benchmark_semantic_maps.py")],
                               capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.strip() == ("benchmark_semantic_maps.py needs a CUDA GPU (and the "
                                        "triton package)")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_maps_benchmark_prints_a_line_per_batch_and_precision():
    import json
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, str(ROOT / "tools/benchmark_semantic_maps.py"),
                                "--batch-sizes", "2", "--precision", "bf16", "fp32",
                                "--size", "128", "176", "--mask-size", "32", "44"],
                               capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [row["precision"] for row in rows] == ["bf16", "fp32"]
    assert rows[0]["triton_64x128qallw4s1_err64"] <= 2 * rows[0]["eager_marginalise_err64"]
    assert rows[1]["triton_maps_ms"] > 0 and "triton_64x128qallw4s1_ms" not in rows[1]
