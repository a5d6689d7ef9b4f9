"""Acceleration beside the model: CUDA graphs, compilation, fused losses and optimizer, pinned
batches. `accelerate(model, cfg)` is the one step the trainer, the benchmark and the predictor
take; the keys are in cfg.ACCELERATION (mask_former/config.py)."""
from .accelerate import AcceleratedMaskFormer, accelerate, fused_optimizer, pin_batches
from .cuda_graph import CUDAGraphRunner, TrainingGraphs
from .fused_losses import FusedMaskLosses
from .pinned_batches import PinnedBatches, pin_batch

__all__ = ["AcceleratedMaskFormer", "accelerate", "fused_optimizer", "pin_batches",
           "CUDAGraphRunner", "TrainingGraphs", "FusedMaskLosses", "PinnedBatches", "pin_batch"]
