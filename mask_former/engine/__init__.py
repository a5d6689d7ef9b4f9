"""Acceleration beside the model: CUDA graphs, compilation, fused losses and optimizer, pinned
batches, a bound on the host's lead over the GPU. `accelerate(model, cfg)` is the one step the
trainer, the benchmark and the predictor take; the keys are in cfg.ACCELERATION
(mask_former/config.py)."""
from .accelerate import (AcceleratedMaskFormer, accelerate, build_host_lead, fused_optimizer,
                         limit_host_threads, pin_batches)
from .cuda_graph import CUDAGraphRunner, TrainingGraphs
from .fused_losses import FusedMaskCosts, FusedMaskLosses, FusedSemanticMaps
from .host_lead import HostLead, HostLeadHook
from .pinned_batches import PinnedBatches, pin_batch

__all__ = ["AcceleratedMaskFormer", "accelerate", "build_host_lead", "fused_optimizer",
           "limit_host_threads", "pin_batches", "CUDAGraphRunner", "TrainingGraphs",
           "FusedMaskCosts", "FusedMaskLosses", "FusedSemanticMaps", "HostLead", "HostLeadHook",
           "PinnedBatches", "pin_batch"]
