"""Semantic inference as one Triton kernel (ACCELERATION.TRITON_SEMANTIC_INFERENCE) against the
eager steps it replaces: upsampling, sigmoid and marginalisation over the queries.

On the CPU the kernel runs in Triton's interpreter (a subprocess: TRITON_INTERPRET must be set
before Triton compiles anything). The interpreter mishandles bfloat16, so there the low-precision
path is checked in float16 (the same rounding steps); the `gpu` tests run the compiled kernel in
float32 and under bfloat16 autocast.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Shared by the interpreter's subprocess and the GPU tests.
CHECK = """
import torch
import torch.nn.functional as F

from mask_former.modeling.postprocessing import upsampled_semantic_inference
from mask_former.modeling.semantic_inference_triton import semantic_inference_triton


def check(device, shapes, dtype):
    generator = torch.Generator().manual_seed(0)
    for batch, queries, classes, h, w, height, width in shapes:
        cls = torch.randn(batch, queries, classes + 1, generator=generator).to(device, dtype)
        masks = (3 * torch.randn(batch, queries, h, w, generator=generator)).to(device, dtype)
        got = semantic_inference_triton(cls, masks, (height, width))
        expected = upsampled_semantic_inference(cls, masks, (height, width))
        exact = upsampled_semantic_inference(cls.double(), masks.double(), (height, width))
        assert got.shape == expected.shape == (batch, classes, height, width)
        assert got.dtype == expected.dtype
        got_error = (got.double() - exact).abs().max().item()
        eager_error = (expected.double() - exact).abs().max().item()
        # the eager steps' own rounding, and one rounding of the result more at most
        ulp = torch.finfo(dtype).eps * exact.abs().max().item()
        assert got_error <= eager_error + ulp, (batch, queries, classes, h, w, got_error,
                                                eager_error)
        if dtype == torch.float32:
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        else:
            differ = (got != expected).float().mean().item()
            assert differ < 0.01, differ  # the order of the sum over queries, rarely seen
        if classes > 1:  # the winning class, where eager's best two are apart by more than rounding
            top = expected.double().topk(2, dim=1).values
            clear = (top[:, 0] - top[:, 1]) > 4 * ulp
            assert torch.equal(got.argmax(1)[clear], expected.argmax(1)[clear])


# (B, Q, K, h, w, H, W): 4x as MaskFormer's masks, odd and fractional factors, queries and classes
# not powers of two, more classes than a block (64), a partial last pixel block
SMALL = [(2, 10, 7, 8, 12, 32, 48), (1, 20, 70, 5, 7, 20, 28), (2, 3, 40, 6, 6, 13, 17),
         (1, 1, 1, 1, 1, 3, 5)]
"""


def _interpret(body: str) -> None:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    completed = subprocess.run([sys.executable, "-c", CHECK + body + "\nprint('ok')\n"], env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0 and completed.stdout.strip().endswith("ok"), \
        completed.stdout[-2000:] + completed.stderr[-4000:]


def test_the_kernel_equals_the_eager_steps_in_the_triton_interpreter():
    _interpret("check('cpu', SMALL, torch.float32)\ncheck('cpu', SMALL, torch.float16)")


def test_other_dtypes_raise_naming_the_key_that_turns_the_kernel_off():
    pytest.importorskip("triton")
    from mask_former.modeling.semantic_inference_triton import semantic_inference_triton

    with pytest.raises(ValueError, match="float64.*ACCELERATION.TRITON_SEMANTIC_INFERENCE False"):
        semantic_inference_triton(torch.zeros(1, 2, 3, dtype=torch.float64),
                                  torch.zeros(1, 2, 4, 4, dtype=torch.float64), (8, 8))


@pytest.mark.gpu
def test_the_compiled_kernel_equals_the_eager_steps_on_the_gpu():
    """Compiled, at the ADE20K recipe's sizes too (100 queries, 150 classes, 512x704 padded
    inputs), in float32 and under bfloat16 autocast (bfloat16 mask logits, as the head gives)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    namespace = {}
    exec(CHECK, namespace)
    shapes = namespace["SMALL"] + [(2, 100, 150, 128, 176, 512, 704)]
    namespace["check"]("cuda", shapes, torch.float32)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        namespace["check"]("cuda", shapes, torch.bfloat16)


@pytest.mark.gpu
def test_accelerated_semantic_inference_gives_the_eager_outputs():
    """A tiny MaskFormer's semantic outputs with TRITON_SEMANTIC_INFERENCE, as the eager model's."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from detectron2.modeling import build_model

    from mask_former.engine import accelerate
    from tiny_models import tiny_batch, tiny_config

    cfg = tiny_config()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cuda"
    cfg.ACCELERATION.TRITON_SEMANTIC_INFERENCE = True
    cfg.ACCELERATION.TEST_CUDA_GRAPH = False  # the network as eager's: only the kernel differs
    torch.manual_seed(0)
    eager = build_model(cfg).eval()
    fast = accelerate(build_model(cfg).eval(), cfg)
    fast.load_state_dict(eager.state_dict())
    batch = tiny_batch(sizes=((96, 128), (80, 96)), seed=0)
    with torch.no_grad():
        expected = eager([dict(x) for x in batch])
        got = fast([dict(x) for x in batch])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g["sem_seg"], e["sem_seg"], rtol=1e-5, atol=1e-6)
