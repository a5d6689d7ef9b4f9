"""Backbone + head replayed from CUDA graphs: one recorded graph per input shape.

A MaskFormer step launches a few thousand small kernels from Python; on a fast GPU launching
them takes longer than running them. A replayed graph launches them all at once and gives the
same numbers (the same kernels run in the same order).

- `CUDAGraphRunner`: inference (no gradients).
- `TrainingGraphs`: training, with one graph for the forward pass and one for its backward pass
  (partial-network capture: matching, losses and the optimizer stay eager around them).

Both record a graph the first time they see an input shape (and dtype, device, autocast state)
and replay it after that. Recording costs a few passes and each graph keeps its memory, so only
`max_shapes` shapes are recorded (ACCELERATION.CUDA_GRAPH_MAX_SHAPES); later shapes run eagerly.
Fixed-size inputs (training crops padded to INPUT.SIZE_DIVISIBILITY, a camera, a benchmark) are
the case they serve.
"""
import logging
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

logger = logging.getLogger(__name__)


def _autocast_state() -> Tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")


def graph_key(x: torch.Tensor) -> tuple:
    """What a recorded graph (or a compiled variant) is specific to: shape, dtype, device and
    the autocast state."""
    return (tuple(x.shape), x.dtype, x.device, *_autocast_state())


def _uncached_autocast():
    """The current CUDA autocast state without its weight-cast cache.

    A graph must record the casts of the weights it uses: a cast cached before recording would be
    replayed as a stale copy of the weights.
    """
    enabled, dtype = _autocast_state()
    return torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False)


class _PerShapeGraphs:
    """Graphs keyed by input shape, at most `max_shapes` of them; None means "run eagerly"."""

    def __init__(self, fn: Callable, max_shapes: int):
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be at least 1, got {max_shapes}")
        self.fn = fn
        self.max_shapes = max_shapes
        self.graphs: Dict[tuple, object] = {}
        self._warned_full = False

    def _lookup(self, x: torch.Tensor, record: Callable[[torch.Tensor], object]):
        """The graph for x's key, recorded now if there is room; None when there is none."""
        key = graph_key(x)
        graph = self.graphs.get(key)
        if graph is not None:
            return graph
        if len(self.graphs) >= self.max_shapes:
            if not self._warned_full:
                logger.warning(
                    f"{type(self).__name__}: {len(self.graphs)} input shapes already have CUDA "
                    f"graphs (the maximum); other shapes, such as {tuple(x.shape)}, run eagerly. "
                    "Pad inputs to fixed sizes (INPUT.SIZE_DIVISIBILITY) or raise "
                    "ACCELERATION.CUDA_GRAPH_MAX_SHAPES to replay graphs.")
                self._warned_full = True
            return None
        graph = record(x)
        if graph is not None:  # None: this runner cannot record here, the caller runs eagerly
            self.graphs[key] = graph
        return graph


class CUDAGraphRunner(_PerShapeGraphs):
    """Calls `fn(x)` by replaying a CUDA graph recorded for x's shape and dtype (inference only).

    The first call for a shape runs `fn` twice to warm up (cuDNN picks its algorithms), then
    records it. The outputs are the graph's own buffers: the next call overwrites them, so use
    (or copy) them before calling again. Graphs share one memory pool. Returns None for a shape
    beyond `max_shapes`; the caller then runs `fn` itself.
    """

    def __init__(self, fn: Callable[[torch.Tensor], object], max_shapes: int = 2):
        super().__init__(fn, max_shapes)
        self.pool = None

    def __call__(self, x: torch.Tensor):
        if not x.is_cuda:
            raise ValueError("CUDAGraphRunner needs a CUDA tensor")
        recorded = self._lookup(x, self._record)
        if recorded is None:
            return None
        graph, static_input, static_output = recorded
        static_input.copy_(x)
        graph.replay()
        return static_output

    def _record(self, x: torch.Tensor):
        try:
            return self._capture(x)
        except RuntimeError as error:  # capture refuses host syncs, unsupported kernels, ...
            raise RuntimeError(
                f"Recording the CUDA graph of inference failed ({error}). Run inference without "
                "it: ACCELERATION.TEST_CUDA_GRAPH False."
            ) from error

    def _capture(self, x: torch.Tensor):
        static_input = x.clone()
        side_stream = torch.cuda.Stream(device=x.device)
        side_stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side_stream), _uncached_autocast():
            for _ in range(2):
                self.fn(static_input)
        torch.cuda.current_stream(x.device).wait_stream(side_stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"), \
                _uncached_autocast():
            static_output = self.fn(static_input)
        return graph, static_input, static_output


class _RecordedStep:
    """One input shape's recorded forward and backward graphs and their static tensors."""

    def __init__(self, fn: Callable, params: List[nn.Parameter], x: torch.Tensor, warmup: int):
        self.params = params
        self.param_pointers = tuple(p.data_ptr() for p in params)
        self.static_input = x.clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream), _uncached_autocast():
            # cuDNN and cuBLAS choose algorithms and allocate workspaces outside the capture.
            for _ in range(warmup):
                outputs = [o for o in tree_flatten(fn(self.static_input))[0] if o.requires_grad]
                torch.autograd.grad(outputs, params, [torch.zeros_like(o) for o in outputs],
                                    allow_unused=True)
            del outputs
        torch.cuda.current_stream(x.device).wait_stream(stream)

        pool = torch.cuda.graph_pool_handle()
        self.forward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph, pool=pool, stream=stream,
                              capture_error_mode="thread_local"), _uncached_autocast():
            outputs = fn(self.static_input)
        self.static_outputs, self.output_spec = tree_flatten(outputs)
        # Outputs that need no gradient (none, in MaskFormer's heads) are passed through.
        self.differentiable = [o.requires_grad for o in self.static_outputs]
        self.static_grad_outputs = [torch.empty_like(o) for o, d in
                                    zip(self.static_outputs, self.differentiable) if d]
        self.backward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.backward_graph, pool=pool, stream=stream,
                              capture_error_mode="thread_local"):
            grads = torch.autograd.grad(
                [o for o, d in zip(self.static_outputs, self.differentiable) if d], params,
                self.static_grad_outputs, allow_unused=True)
        # None for a parameter the outputs do not depend on: it gets no gradient, as in eager.
        self.static_grads = tuple(grads)
        # The recorded autograd graph is done with; kept, its nodes would tie the parameters'
        # gradient accumulators to the recording stream.
        self.static_outputs = [o.detach() for o in self.static_outputs]

    def parameters_moved(self) -> bool:
        """Whether a parameter's memory changed since recording (moved, reloaded with assign)."""
        return tuple(p.data_ptr() for p in self.params) != self.param_pointers


class _ReplayStep(torch.autograd.Function):
    """Forward: copy the input in and replay the forward graph. Backward: copy the output
    gradients in and replay the backward graph, which writes every parameter's gradient."""

    @staticmethod
    def forward(ctx, step: _RecordedStep, x: torch.Tensor, *params):
        step.static_input.copy_(x)
        step.forward_graph.replay()
        ctx.step = step
        outputs = tuple(o.detach() for o in step.static_outputs)
        ctx.mark_non_differentiable(*[o for o, d in zip(outputs, step.differentiable) if not d])
        return outputs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_outputs):
        step = ctx.step
        differentiable = [g for g, d in zip(grad_outputs, step.differentiable) if d]
        for static, grad in zip(step.static_grad_outputs, differentiable):
            static.copy_(grad)
        step.backward_graph.replay()
        # Copies: autograd adopts a returned gradient as .grad where that is None, and .grad must
        # not share memory with the graph, whose next forward replay reuses it for intermediates.
        return (None, None) + tuple(None if g is None else g.clone() for g in step.static_grads)


class TrainingGraphs(_PerShapeGraphs):
    """Training forward and backward of `fn` (backbone + head) replayed from CUDA graphs.

    `fn(x)` maps a (B, C, H, W) CUDA batch to a (nested) dict of tensors and depends on the
    parameters of `module` only. Calling this returns the same outputs, attached to autograd so
    that backward replays the recorded backward pass and accumulates into each parameter's
    `.grad` as eager autograd would, or None when the caller should run `fn` eagerly: off the
    GPU, without gradients, for shapes beyond `max_shapes`, or where graphs cannot work (several
    workers with SyncBatchNorm). A recording that fails raises, naming the key that turns graphs
    off.

    Recording runs `warmup` forward and backward passes on the first batch of a shape (their
    BatchNorm statistics updates are undone) and captures one more. Dropout and DropPath draw new
    random numbers at every replay. With several workers and SyncBatchNorm, whose all-gathers
    cannot be replayed safely, training runs eagerly.
    """

    def __init__(self, fn: Callable[[torch.Tensor], object], module: nn.Module,
                 max_shapes: int = 2, warmup: int = 3):
        super().__init__(fn, max_shapes)
        self.module = module
        self.warmup = warmup
        self.disabled: Optional[str] = None

    def __call__(self, x: torch.Tensor):
        if self.disabled or not x.is_cuda or not torch.is_grad_enabled():
            return None
        if self.graphs and next(iter(self.graphs.values())).parameters_moved():
            # The graphs would read stale memory.
            logger.info("Model parameters moved since the training graphs were recorded; re-recording.")
            self.graphs.clear()
        step = self._lookup(x, self._record)
        if step is None:
            return None
        outputs = _ReplayStep.apply(step, x, *step.params)
        return tree_unflatten(list(outputs), step.output_spec)

    def _record(self, x: torch.Tensor) -> Optional[_RecordedStep]:
        reason = self._unsupported()
        if reason is not None:
            self.disabled = reason
            logger.warning(f"Training without CUDA graphs: {reason}.")
            return None
        params = [p for p in self.module.parameters() if p.requires_grad]
        buffers = list(self.module.buffers())
        saved = [b.clone() for b in buffers]
        try:
            step = _RecordedStep(self.fn, params, x, self.warmup)
        except RuntimeError as error:  # capture refuses host syncs, unsupported kernels, ...
            raise RuntimeError(
                f"Recording the CUDA graphs of the training step failed ({error}). Train without "
                "them: ACCELERATION.TRAIN_CUDA_GRAPH False."
            ) from error
        finally:
            with torch.no_grad():
                for buffer, value in zip(buffers, saved):
                    buffer.copy_(value)
        logger.info(f"Recorded CUDA graphs of the training step for inputs {tuple(x.shape)}.")
        return step

    def _unsupported(self) -> Optional[str]:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed and any(isinstance(m, nn.SyncBatchNorm) or "SyncBatchNorm" in type(m).__name__
                               for m in self.module.modules()):
            return "SyncBatchNorm communicates across workers inside the network"
        return None
