"""Multi-scale deformable attention in pure PyTorch: against an independent float64 reference,
its gradients, the module's initialisation and geometry, and the fast (compiled) path on a GPU."""
import math

import pytest
import torch

from helpers import relative_error, run_in_triton_interpreter
from mask_former.modeling.pixel_decoder.ops import (
    MSDeformAttn,
    ms_deform_attn,
    ms_deform_attn_pytorch,
    use_fast_ms_deform_attn,
)

SHAPES = [(3, 4), (2, 3)]  # (H_l, W_l) of two levels
STARTS = [0, 12]


def random_inputs(dtype=torch.float32, device="cpu", batch=2, queries=5, heads=2, channels=3,
                  points=2, shapes=SHAPES, seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = sum(h * w for h, w in shapes)
    value = torch.randn(batch, total, heads, channels, generator=generator, dtype=dtype)
    # Some points fall outside [0, 1]: they must read zeros there.
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=generator,
                           dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=generator,
                         dtype=dtype)
    return [t.to(device) for t in (value, locations, weights)]


def bilinear_reference(value, shapes, starts, locations, weights):
    """Float64 loops: each point's four neighbouring pixel centres, weighted by distance; pixels
    outside the map count as zeros. Pixel (i, j) of an H x W map has its centre at
    ((j + 0.5) / W, (i + 0.5) / H)."""
    value, locations, weights = value.double(), locations.double(), weights.double()
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = locations.shape
    out = torch.zeros(batch, queries, heads * channels, dtype=torch.float64)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                for level, ((height, width), start) in enumerate(zip(shapes, starts)):
                    for p in range(points):
                        x = locations[b, q, m, level, p, 0].item() * width - 0.5
                        y = locations[b, q, m, level, p, 1].item() * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(channels, dtype=torch.float64)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < height and 0 <= xx < width:
                                    sample += wy * wx * value[b, start + yy * width + xx, m]
                        out[b, q, m * channels:(m + 1) * channels] += (
                            weights[b, q, m, level, p] * sample)
    return out


def test_pure_function_matches_float64_bilinear_reference():
    value, locations, weights = random_inputs()
    expected = bilinear_reference(value, SHAPES, STARTS, locations, weights)
    actual = ms_deform_attn_pytorch(value, SHAPES, STARTS, locations, weights)
    assert actual.shape == (2, 5, 6) and actual.dtype == torch.float32
    assert relative_error(actual, expected) < 1e-6
    in_float64 = ms_deform_attn_pytorch(*_double(value), SHAPES, STARTS, *_double(locations, weights))
    assert relative_error(in_float64, expected) < 1e-12


def _double(*tensors):
    return [t.double() for t in tensors]


def test_official_tensor_arguments_give_the_same_result():
    """The official op takes (L, 2) and (L,) long tensors; int lists avoid a host sync on GPUs."""
    value, locations, weights = random_inputs()
    from_lists = ms_deform_attn(value, SHAPES, STARTS, locations, weights)
    from_tensors = ms_deform_attn(value, torch.tensor(SHAPES), torch.tensor(STARTS), locations,
                                  weights)
    assert torch.equal(from_lists, from_tensors)


def test_gradients_match_finite_differences():
    value, locations, weights = _double(*random_inputs(batch=1, queries=3, channels=2, seed=1))
    for t in (value, locations, weights):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, l, w: ms_deform_attn_pytorch(v, SHAPES, STARTS, l, w), (value, locations, weights))


def test_shapes_that_do_not_cover_the_values_are_named():
    value, locations, weights = random_inputs()
    with pytest.raises(ValueError, match=r"spatial shapes \[\(3, 4\), \(2, 2\)\] hold 16 pixels, value has 18"):
        ms_deform_attn(value, [(3, 4), (2, 2)], STARTS, locations, weights)


def test_initial_offsets_point_around_each_head_direction():
    """Deformable DETR's initialisation: head m looks along angle 2 pi m / M (scaled onto the
    square), point p at p + 1 pixels; offsets do not depend on the query yet; uniform weights."""
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=8, n_points=2)
    bias = module.sampling_offsets.bias.detach().view(8, 2, 2, 2)  # (M, L, P, xy)
    expected_first_point = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]], dtype=torch.float32)
    torch.testing.assert_close(bias[:, 0, 0], expected_first_point, atol=1e-5, rtol=0)
    torch.testing.assert_close(bias[:, 1, 1], 2 * expected_first_point, atol=1e-5, rtol=0)
    assert torch.count_nonzero(module.sampling_offsets.weight) == 0
    assert torch.count_nonzero(module.attention_weights.weight) == 0
    assert torch.count_nonzero(module.attention_weights.bias) == 0


def test_offsets_are_in_pixels_of_each_level():
    """One head, one point one pixel to the right of each pixel's centre, identity projections:
    every pixel reads its right neighbour, the last column reads zeros."""
    module = MSDeformAttn(d_model=2, n_levels=1, n_heads=1, n_points=1)
    with torch.no_grad():
        module.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]))
        for linear in (module.value_proj, module.output_proj):
            linear.weight.copy_(torch.eye(2))
            linear.bias.zero_()
    height, width = 3, 5
    image = torch.arange(2 * height * width, dtype=torch.float32).view(1, 2, height, width) + 1
    flat = image.flatten(2).transpose(1, 2)  # (1, H*W, 2)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    reference = torch.stack([xs.flatten() / width, ys.flatten() / height], -1)[None, :, None]
    out = module(flat, reference, flat, [(height, width)], [0])
    shifted = torch.zeros_like(image)
    shifted[..., :-1] = image[..., 1:]
    torch.testing.assert_close(out, shifted.flatten(2).transpose(1, 2), atol=1e-5, rtol=0)


def test_fast_path_is_off_until_switched_on():
    model = torch.nn.Sequential(MSDeformAttn(8, 1, 2, 1), torch.nn.Linear(2, 2), MSDeformAttn(8, 1, 2, 1))
    assert not any(m.fast for m in model.modules() if isinstance(m, MSDeformAttn))
    assert use_fast_ms_deform_attn(model) == 2
    assert all(m.fast for m in model.modules() if isinstance(m, MSDeformAttn))
    use_fast_ms_deform_attn(model, enabled=False)
    assert not any(m.fast for m in model.modules() if isinstance(m, MSDeformAttn))


# Run in a subprocess: TRITON_INTERPRET must be set before Triton compiles anything.
INTERPRETED_TRITON_CHECK = """
import torch
from helpers import relative_error
from test_ms_deform_attn import SHAPES, STARTS, bilinear_reference, random_inputs
from mask_former.modeling.pixel_decoder.ops import ms_deform_attn_pytorch
from mask_former.modeling.pixel_decoder.ops.ms_deform_attn_triton import ms_deform_attn_triton
shapes = SHAPES + [(1, 1)]  # a one-pixel level too
starts = STARTS + [18]
value, locations, weights = random_inputs(torch.float64, shapes=shapes, queries=37, heads=3,
                                          channels=5, seed=3)
leaves = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
grad_out = torch.randn(2, 37, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
# The pure path in float64 for the gradients (it is checked against the loops above)
expected = ms_deform_attn_pytorch(leaves[0], shapes, starts, leaves[1], leaves[2])
assert relative_error(expected, bilinear_reference(value, shapes, starts, locations, weights)) < 1e-12
expected_grads = torch.autograd.grad(expected, leaves, grad_out)
inputs = [t.detach().float().requires_grad_(True) for t in (value, locations, weights)]
out = ms_deform_attn_triton(inputs[0], shapes, starts, inputs[1], inputs[2])
grads = torch.autograd.grad(out, inputs, grad_out.float())
for name, a, e in zip(("output", "d value", "d locations", "d weights"), (out, *grads),
                      (expected, *expected_grads)):
    error = relative_error(a, e)
    assert error < 1e-5, (name, error)
print("ok")
"""


def test_triton_kernels_match_the_reference_in_the_triton_interpreter():
    """The Triton kernels (forward, and the backward's gradients of values, locations and
    weights) against the pure path in float64, run by Triton's interpreter on the CPU, with
    points outside the maps and a one-pixel level."""
    pytest.importorskip("triton")
    run_in_triton_interpreter(INTERPRETED_TRITON_CHECK)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("path", ["compiled", "triton"])
def test_fast_path_matches_pure_path_on_gpu(path):
    """torch.compile of the pure function, and the Triton kernels, against the pure function,
    forward and gradients, at the size of Mask2Former's encoder on a 256 x 320 image (strides 8,
    16, 32)."""
    shapes = [(32, 40), (16, 20), (8, 10)]
    starts = [0, 1280, 1600]
    total = 1680
    generator = torch.Generator(device="cuda").manual_seed(0)
    value = torch.randn(2, total, 8, 32, device="cuda", generator=generator)
    locations = torch.rand(2, total, 8, 3, 4, 2, device="cuda", generator=generator) * 1.2 - 0.1
    weights = torch.rand(2, total, 8, 3, 4, device="cuda", generator=generator).softmax(-1)
    grad_out = torch.randn(2, total, 256, device="cuda", generator=generator)
    results = []
    for fast in (False, True):
        inputs = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
        out = ms_deform_attn(inputs[0], shapes, starts, inputs[1], inputs[2],
                             fast=fast and path == "compiled", triton=fast and path == "triton")
        grads = torch.autograd.grad(out, inputs, grad_out)
        results.append((out, *grads))
    for name, pure, fast in zip(("output", "d value", "d locations", "d weights"), *results):
        assert relative_error(fast, pure) < 1e-5, name


def test_a_trace_follows_the_levels_sizes():
    """Level sizes read from the maps' shapes, as the pixel decoder passes them, stay operations
    of a torch.jit.trace (what both exporters start from): a trace at one size gives the eager
    results at another."""
    from mask_former.modeling.pixel_decoder.msdeformattn import MSDeformAttnTransformerEncoder

    class Attend(torch.nn.Module):
        """Two maps through MSDeformAttn, as the encoder does."""

        def __init__(self):
            super().__init__()
            self.attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2)

        def forward(self, fine, coarse):
            shapes = [tuple(m.shape[-2:]) for m in (fine, coarse)]
            starts = [0, shapes[0][0] * shapes[0][1]]
            flat = torch.cat([m.flatten(2).transpose(1, 2) for m in (fine, coarse)], 1)
            reference = MSDeformAttnTransformerEncoder.reference_points(shapes, flat.device)
            return self.attn(flat, reference, flat, shapes, starts)

    torch.manual_seed(0)
    module = Attend().eval()
    with torch.no_grad():  # points and weights that depend on the query
        module.attn.sampling_offsets.weight.normal_(std=0.5)
        module.attn.attention_weights.weight.normal_()

    def maps(height, width):
        return torch.randn(1, 8, height, width), torch.randn(1, 8, (height + 1) // 2, (width + 1) // 2)

    with torch.no_grad():
        traced = torch.jit.trace(module, maps(6, 4), check_trace=False)
        for size in [(6, 4), (5, 9)]:
            inputs = maps(*size)
            torch.testing.assert_close(traced(*inputs), module(*inputs), rtol=1e-6, atol=1e-6)
