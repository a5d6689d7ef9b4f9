"""Inference through CUDA graphs: one recorded graph per input shape, replayed.

At batch 1 the network's few hundred small kernels take longer to launch from Python than to run;
a replayed graph launches them all at once.
"""
from typing import Callable, Dict, Tuple

import torch


class CUDAGraphRunner:
    """Calls `fn(x)` by replaying a CUDA graph recorded for x's shape and dtype.

    The first call for a shape runs `fn` twice to warm up (cuDNN picks its algorithms), then
    records it. The outputs are the graph's own buffers: the next call overwrites them, so use
    (or copy) them before calling again. Graphs share one memory pool; each distinct shape records
    a new graph, so this suits inputs of a few fixed sizes (a camera, a benchmark, padded batches).
    Inference only: no gradients flow through a replay.
    """

    def __init__(self, fn: Callable[[torch.Tensor], object]):
        self.fn = fn
        self.graphs: Dict[Tuple, Tuple[torch.cuda.CUDAGraph, torch.Tensor, object]] = {}
        self.pool = None

    def __call__(self, x: torch.Tensor):
        if not x.is_cuda:
            raise ValueError("CUDAGraphRunner needs a CUDA tensor")
        key = (tuple(x.shape), x.dtype, x.device, torch.is_autocast_enabled("cuda"))
        if key not in self.graphs:
            self.graphs[key] = self._record(x)
        graph, static_input, static_output = self.graphs[key]
        static_input.copy_(x)
        graph.replay()
        return static_output

    def _record(self, x: torch.Tensor):
        static_input = x.clone()
        side_stream = torch.cuda.Stream(device=x.device)
        side_stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side_stream):
            for _ in range(2):
                self.fn(static_input)
        torch.cuda.current_stream(x.device).wait_stream(side_stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_output = self.fn(static_input)
        return graph, static_input, static_output
