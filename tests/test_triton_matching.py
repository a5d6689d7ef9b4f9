"""The matcher's assignment solved by the Triton kernel (ACCELERATION.TRITON_MATCHING) against
scipy's `linear_sum_assignment`: the same algorithm, so the same assignment exactly, ties included.

On the CPU the kernel runs in Triton's interpreter (a subprocess: TRITON_INTERPRET must be set
before Triton compiles anything); the `gpu` tests run it compiled.
"""
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, run_in_triton_interpreter

# Shared by the interpreter's subprocess and the GPU test: costs of several kinds (continuous,
# small integers with many ties, constant, square blocks, images without targets), the kernel's
# query of every target against scipy's, and the criterion's LayerMatches both ways.
CHECK = """
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from mask_former.modeling.assignment_triton import queries_of_targets
from mask_former.modeling.matcher import LayerMatches, _assign_on_host


def scipy_queries(cost, sizes):
    out = torch.empty(cost.shape[0], sum(sizes), dtype=torch.int64)
    for layer in range(cost.shape[0]):
        offset = 0
        for b, size in enumerate(sizes):
            if size:
                rows, cols = linear_sum_assignment(cost[layer, b, :, offset:offset + size].numpy())
                out[layer, offset + torch.as_tensor(cols)] = torch.as_tensor(rows)
            offset += size
    return out


def check(device, cases, max_queries):
    rng = np.random.default_rng(0)
    for case in range(cases):
        layers, images = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        queries = int(rng.integers(1, max_queries + 1))
        sizes = [int(rng.integers(0, queries + 1)) for _ in range(images)]
        if case % 5 == 4:
            sizes[0] = queries  # a square block: solved with queries as rows, as scipy does
        shape = (layers, images, queries, sum(sizes))
        kind = case % 4
        if kind == 0:
            values = rng.standard_normal(shape)
        elif kind == 1:
            values = rng.integers(0, 3, shape)  # many equal costs: scipy's tie-breaking decides
        elif kind == 2:
            values = np.zeros(shape)
        else:
            values = rng.integers(0, 3, shape) + 1e-6 * rng.standard_normal(shape)
        cost = torch.tensor(values, dtype=torch.float32)
        got = queries_of_targets(cost.to(device), sizes).cpu()
        expected = scipy_queries(cost, sizes)
        assert torch.equal(got, expected), (case, sizes, got, expected)
        targets = [{"labels": torch.zeros(size, dtype=torch.int64, device=device)} for size in sizes]
        on_host = LayerMatches.gather(_assign_on_host(cost, sizes), targets)
        on_device = LayerMatches.from_queries(got.to(device), targets)
        assert on_device.all_targets_in_order and on_host.all_targets_in_order
        for name in ("batch", "query", "target", "matcher_order"):
            assert torch.equal(getattr(on_device, name).cpu(), getattr(on_host, name).cpu()), name
"""


def test_triton_assignment_equals_scipy_in_the_triton_interpreter():
    pytest.importorskip("triton")
    script = CHECK + "\ncheck('cpu', cases=40, max_queries=12)\nprint('ok')\n"
    run_in_triton_interpreter(script, timeout=600)


def test_more_targets_than_queries_is_left_to_the_host():
    pytest.importorskip("triton")
    from mask_former.modeling.assignment_triton import queries_of_targets

    with pytest.raises(ValueError, match="more targets"):
        queries_of_targets(torch.zeros(1, 1, 3, 4), [4])


@pytest.mark.gpu
def test_triton_assignment_equals_scipy_on_the_gpu():
    """Compiled, on problems of the recipes' sizes (100 queries, up to 100 targets an image)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    namespace = {}
    exec(CHECK, namespace)
    namespace["check"]("cuda", cases=60, max_queries=100)
    namespace["check"]("cuda", cases=10, max_queries=200)



def test_building_the_matches_starts_no_openmp_team_on_the_host():
    """The criterion's matches, from the GPU's assignment or the host's, are built without a CPU
    op that starts intra-op threads: on a GPU machine a team of OpenMP threads (one per core)
    spins after each use and starved the loader's workers (CPU repeat_interleave did, even for a
    few numbers). Threads are counted in a fresh process, whose pool starts empty; a large op
    afterwards shows that the count sees a team."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs /proc (Linux)")
    script = """
import os
import torch
from mask_former.modeling.matcher import LayerMatches
torch.set_num_threads(4)
threads = lambda: len(os.listdir("/proc/self/task"))
sizes = (3, 5, 0, 4)
targets = [{"labels": torch.zeros(size, dtype=torch.int64)} for size in sizes]
query = torch.stack([torch.cat([torch.randperm(10)[:size] for size in sizes]) for _ in range(6)])
before = threads()
LayerMatches.from_queries(query, targets)
LayerMatches.gather([[(torch.arange(size), torch.arange(size)) for size in sizes]] * 6, targets)
matched = threads()
torch.ones(1 << 22).cumsum_(0).add_(1)
print(before, matched, threads())
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               cwd=ROOT, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    before, matched, after_large_op = map(int, completed.stdout.split())
    assert matched == before
    assert after_large_op > matched
