"""The one step that puts MaskFormer's fast paths beside the eager model (cfg.ACCELERATION).

    limit_host_threads(cfg)              # first: one CPU thread per op where training on a GPU
    model = build_model(cfg)             # plain eager PyTorch, as the paper describes it
    model = accelerate(model, cfg)       # the same computation, faster on a GPU
    loader = pin_batches(loader, cfg)    # training batches pinned in a background thread
    optimizer = build_optimizer(cfg, model, fused=fused_optimizer(cfg))
    lead = build_host_lead(cfg)          # lead.step_done() after each training step

Every path gives the eager path's numbers up to float32 rounding (tests/test_cuda.py) and applies
only where the model is on a CUDA device; elsewhere these calls return what they were given (and
build_host_lead None). A path that fails raises, naming the key that turns it off.
"""
import importlib.util
import logging
from typing import Iterable, List, Optional

import torch
from torch import nn

from ..errors import ConfigError
from ..mask_former_model import MaskFormer
from ..modeling.pixel_decoder.ops.ms_deform_attn import (
    use_fast_ms_deform_attn,
    use_triton_ms_deform_attn,
)
from .cuda_graph import CUDAGraphRunner, TrainingGraphs, graph_key
from .frozen_batchnorm import fold_frozen_batchnorm
from .fused_losses import FusedMaskCosts, FusedMaskLosses, FusedSemanticMaps
from .host_lead import HostLead
from .pinned_batches import PinnedBatches, pin_batch

logger = logging.getLogger(__name__)


def _on_cuda(cfg) -> bool:
    return cfg.ACCELERATION.ENABLED and cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available()


class AcceleratedMaskFormer(nn.Module):
    """Computes what its MaskFormer computes, with the network (backbone + head) compiled and/or
    replayed from CUDA graphs, and inference inputs copied to the GPU from pinned memory.

    Shares the model's parameters, buffers and state dict (state_dict/load_state_dict are the
    model's own: checkpoints are the same either way). `train()`/`eval()` switch the model too;
    the model's mode decides which path runs.
    """

    def __init__(self, model: MaskFormer, *, train_cuda_graph: bool, test_cuda_graph: bool,
                 max_shapes: int, compile_network: bool):
        """
        Args:
            model: the eager MaskFormer, on a CUDA device.
            train_cuda_graph: replay the training forward and backward of the network from CUDA
                graphs (TrainingGraphs); matching, losses and the optimizer stay eager.
            test_cuda_graph: replay inference of the network from a CUDA graph (CUDAGraphRunner).
            max_shapes: each kind of graph is recorded for at most this many input shapes.
            compile_network: run the network through torch.compile (under the graphs, if any).
        """
        super().__init__()
        self.model = model
        # Inference runs `predictions`, the network less its auxiliary layers' outputs, which
        # compiled code then does not compute where nothing else needs them (MaskFormer's
        # earlier layers' masks: 5 of 6 mask products).
        network, predictions = model.network, model.predictions
        if compile_network:
            network, predictions = torch.compile(network), torch.compile(predictions)
        self._network, self._predictions = network, predictions
        # (input key, training) of each compiled variant; compile workers stop after a new one.
        self._compiled_keys = set() if compile_network else None
        self._release_workers = False
        self._train_graphs = TrainingGraphs(network, model, max_shapes) if train_cuda_graph else None
        self._test_graphs = CUDAGraphRunner(predictions, max_shapes) if test_cuda_graph else None
        self.train(model.training)

    def network(self, images: torch.Tensor) -> dict:
        """The model's `network` in training, its `predictions` in inference, replayed from a
        graph where one applies to this input."""
        if self._compiled_keys is not None:
            self._track_compilation(images)
        training = self.model.training
        graphs = self._train_graphs if training else self._test_graphs
        outputs = graphs(images) if graphs is not None else None
        if outputs is not None:
            return outputs
        return self._network(images) if training else self._predictions(images)

    def _track_compilation(self, images: torch.Tensor) -> None:
        """Stops inductor's compile workers one call after each new compiled variant.

        Compiling starts a pool of worker processes, one per core. Where the variant comes from
        inductor's cache they have nothing to compile, but while they start up, after compilation
        has ended, the host's own CPU work of each call (pinning inputs, small CPU ops) runs
        several times slower. Measured on one H200, batch-1 inference with a warm cache: 62 img/s
        with the pool left running, 439 with it stopped (docs/benchmarks.md, ninth round). A
        variant's backward compiles during its first step, hence one call later; a later new
        variant starts a new pool.
        """
        if self._release_workers:
            release_compile_workers()
            self._release_workers = False
        key = (graph_key(images), self.model.training)
        if key not in self._compiled_keys:
            self._compiled_keys.add(key)
            self._release_workers = True

    def forward(self, batched_inputs: List[dict]):
        # The steps of MaskFormer.forward, with this network.
        model = self.model
        if not model.training:
            # Pinned inputs are copied without the host waiting for the GPU (the training loader
            # pins its batches in a background thread: pin_batches).
            batched_inputs = pin_batch([dict(x) for x in batched_inputs])
        images = model.preprocess_images(batched_inputs)
        outputs = self.network(images.tensor)
        if model.training:
            return model.losses(outputs, batched_inputs, images)
        return model.inference(outputs, batched_inputs, images)

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self.model.load_state_dict(*args, **kwargs)


def release_compile_workers() -> None:
    """Stops the compile-worker processes of torch.compile (inductor starts new ones when it
    next compiles)."""
    from torch._inductor.async_compile import shutdown_compile_workers

    shutdown_compile_workers()


def _require_triton(key: str) -> None:
    if importlib.util.find_spec("triton") is None:
        raise ConfigError(f"{key} needs the triton package (installed with PyTorch's CUDA wheels "
                          "on Linux): install it, or set the key False")


def accelerate(model: nn.Module, cfg) -> nn.Module:
    """`model` with the fast paths of cfg.ACCELERATION: a module to call in its place.

    On a CUDA device: convolution weights take the channels-last layout (CHANNELS_LAST), frozen
    BatchNorms are folded into their convolutions
    (FOLD_FROZEN_BATCHNORM), the fused mask losses and matching costs are installed in the
    model's criterion and matcher (FUSED_MASK_LOSSES), deformable attention takes its compiled
    path (FAST_DEFORMABLE_ATTENTION) or its Triton kernels (TRITON_DEFORMABLE_ATTENTION, which
    wins where both are set), the matcher solves its assignments on the GPU (TRITON_MATCHING),
    and a MaskFormer is wrapped in AcceleratedMaskFormer for CUDA graphs (TRAIN_CUDA_GRAPH,
    TEST_CUDA_GRAPH, CUDA_GRAPH_MAX_SHAPES) and compilation (COMPILE; inference compiles and
    graphs the model's `predictions`, without the auxiliary layers' outputs). Semantic
    inference's maps take the Triton kernels (TRITON_SEMANTIC_MAPS), or are compiled
    under COMPILE (FusedSemanticMaps). Elsewhere, or with
    ACCELERATION.ENABLED False, `model` itself is returned. Keep `model` for checkpoints.
    """
    accel = cfg.ACCELERATION
    if not _on_cuda(cfg):
        return model
    if accel.CHANNELS_LAST:
        # In place: the parameters stay the same objects (the optimizer's) with new strides.
        model.to(memory_format=torch.channels_last)
    if accel.FOLD_FROZEN_BATCHNORM:
        fold_frozen_batchnorm(model)
    criterion = getattr(model, "criterion", None)
    matcher = getattr(criterion, "matcher", None)
    if accel.FUSED_MASK_LOSSES and hasattr(criterion, "mask_losses"):
        criterion.mask_losses = FusedMaskLosses()
    if accel.FUSED_MASK_LOSSES and hasattr(matcher, "mask_costs"):
        if not isinstance(matcher.mask_costs, FusedMaskCosts):  # (accelerated a second time)
            matcher.mask_costs = FusedMaskCosts(matcher.mask_costs)
    if accel.TRITON_SEMANTIC_MAPS and hasattr(model, "semantic_maps"):
        _require_triton("ACCELERATION.TRITON_SEMANTIC_MAPS")
        from ..modeling.semantic_maps_triton import semantic_maps_triton

        model.semantic_maps = semantic_maps_triton
    elif accel.COMPILE and hasattr(model, "semantic_maps"):
        if not isinstance(model.semantic_maps, FusedSemanticMaps):
            model.semantic_maps = FusedSemanticMaps(model.semantic_maps)
    if accel.FAST_DEFORMABLE_ATTENTION:
        use_fast_ms_deform_attn(model)
    if accel.TRITON_DEFORMABLE_ATTENTION and use_triton_ms_deform_attn(model):
        _require_triton("ACCELERATION.TRITON_DEFORMABLE_ATTENTION")
    if accel.TRITON_MATCHING and hasattr(matcher, "triton"):
        _require_triton("ACCELERATION.TRITON_MATCHING")
        matcher.triton = True
    wants_network_paths = accel.TRAIN_CUDA_GRAPH or accel.TEST_CUDA_GRAPH or accel.COMPILE
    if not wants_network_paths:
        return model
    if not isinstance(model, MaskFormer) or type(model).forward is not MaskFormer.forward:
        # The wrapper re-runs MaskFormer.forward's steps; another forward would be bypassed.
        logger.info(f"ACCELERATION: {type(model).__name__} does not use MaskFormer's forward; "
                    "its network runs without CUDA graphs or compilation.")
        return model
    return AcceleratedMaskFormer(
        model, train_cuda_graph=accel.TRAIN_CUDA_GRAPH, test_cuda_graph=accel.TEST_CUDA_GRAPH,
        max_shapes=accel.CUDA_GRAPH_MAX_SHAPES, compile_network=accel.COMPILE,
    )


def pin_batches(loader: Iterable, cfg) -> Iterable:
    """The training loader with its batches pinned in a background thread (PINNED_BATCHES), so
    that copying them to the GPU never waits for the running step; `loader` itself elsewhere, and
    for a loader whose batches are on the device already (INPUT.GPU_AUGMENTATION's, which pins
    its decoded batches itself)."""
    if getattr(loader, "yields_device_batches", False):
        return loader
    if _on_cuda(cfg) and cfg.ACCELERATION.PINNED_BATCHES:
        return PinnedBatches(loader)
    return loader


def fused_optimizer(cfg) -> bool:
    """Whether the optimizer should use its fused CUDA kernel (FUSED_OPTIMIZER): AdamW then
    updates every parameter of a group in a couple of launches instead of a dozen per group."""
    return _on_cuda(cfg) and cfg.ACCELERATION.FUSED_OPTIMIZER


def build_host_lead(cfg) -> Optional[HostLead]:
    """The bound on how many training steps the host may queue ahead of the GPU
    (MAX_STEPS_AHEAD); None where the model is not on a CUDA device."""
    steps = cfg.ACCELERATION.MAX_STEPS_AHEAD
    if steps < 0:
        raise ConfigError(f"ACCELERATION.MAX_STEPS_AHEAD={steps}: set it to 0 or more (1: the host "
                          "queues one step while the GPU runs the one before)")
    return HostLead(cfg.MODEL.DEVICE, steps) if _on_cuda(cfg) else None


def limit_host_threads(cfg) -> int:
    """Sets this process's intra-op CPU threads to TRAINING_HOST_THREADS where the model trains on
    a CUDA device (call it before building the model); returns the number before, to restore."""
    threads = cfg.ACCELERATION.TRAINING_HOST_THREADS
    if threads < 0:
        raise ConfigError(f"ACCELERATION.TRAINING_HOST_THREADS={threads}: set it to 0 (torch's "
                          "default) or more")
    before = torch.get_num_threads()
    if threads and _on_cuda(cfg):
        torch.set_num_threads(threads)
    return before
