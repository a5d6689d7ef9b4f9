"""Optimizer construction for MaskFormer: parameter groups and full-model gradient clipping."""
import itertools
from typing import Any, Dict, List

import torch
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

NORM_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)
# Swin's position tables: never decayed, as in the official recipe.
NO_DECAY_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def get_param_groups(model: nn.Module, *, base_lr: float, weight_decay: float,
                     weight_decay_norm: float, weight_decay_embed: float,
                     backbone_multiplier: float) -> List[Dict[str, Any]]:
    """Parameter groups of the official recipe, merged by (lr, weight_decay).

    Backbone parameters get lr * backbone_multiplier; normalisation layers weight_decay_norm;
    embeddings weight_decay_embed; Swin's position tables no decay. One group per distinct
    setting (not one per parameter) keeps the optimizer step fused and fast.
    """
    groups: Dict[tuple, List[nn.Parameter]] = {}
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            lr = base_lr * (backbone_multiplier if "backbone" in module_name else 1.0)
            decay = weight_decay
            if param_name in NO_DECAY_PARAM_NAMES:
                decay = 0.0
            if isinstance(module, NORM_MODULES):
                decay = weight_decay_norm
            if isinstance(module, nn.Embedding):
                decay = weight_decay_embed
            groups.setdefault((lr, decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay}
            for (lr, decay), params in groups.items()]


def _with_full_model_clipping(optimizer_cls, max_norm: float):
    """A subclass of `optimizer_cls` that clips the global gradient norm of all groups."""

    class FullModelGradientClippingOptimizer(optimizer_cls):
        def step(self, closure=None):
            params = itertools.chain(*[group["params"] for group in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = f"FullModelClipped{optimizer_cls.__name__}"
    return FullModelGradientClippingOptimizer


def build_optimizer(cfg, model: nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """SGD or AdamW (SOLVER.OPTIMIZER) over `get_param_groups`, with SOLVER.CLIP_GRADIENTS.

    fused: AdamW with its fused CUDA kernel (`mask_former.engine.fused_optimizer(cfg)` says
    when): the same update rule, float32 rounding aside.
    """
    solver = cfg.SOLVER
    param_groups = get_param_groups(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        weight_decay_embed=solver.WEIGHT_DECAY_EMBED,
        backbone_multiplier=solver.BACKBONE_MULTIPLIER,
    )
    optimizers = {
        "SGD": lambda cls: cls(param_groups, solver.BASE_LR, momentum=solver.MOMENTUM,
                               nesterov=solver.NESTEROV),
        "ADAMW": lambda cls: cls(param_groups, solver.BASE_LR, fused=True if fused else None),
    }
    classes = {"SGD": torch.optim.SGD, "ADAMW": torch.optim.AdamW}
    name = solver.OPTIMIZER.upper()
    if name not in optimizers:
        raise ValueError(f"SOLVER.OPTIMIZER={solver.OPTIMIZER!r}; choose one of {sorted(optimizers)}")
    clip = solver.CLIP_GRADIENTS
    optimizer_cls = classes[name]
    if clip.ENABLED and clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE > 0.0:
        optimizer_cls = _with_full_model_clipping(optimizer_cls, clip.CLIP_VALUE)
    optimizer = optimizers[name](optimizer_cls)
    if clip.CLIP_TYPE != "full_model":
        optimizer = maybe_add_gradient_clipping(cfg, optimizer)
    optimizer.register_load_state_dict_post_hook(_state_in_parameter_layout)
    return optimizer


def _state_in_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Gives each loaded per-parameter state tensor (AdamW's moments, SGD's momentum) its
    parameter's memory layout. A checkpoint written with another layout (ACCELERATION.CHANNELS_LAST
    on in one run, off in the other) would otherwise be refused by the fused and foreach kernels,
    which need a parameter and its state to share strides."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if (torch.is_tensor(value) and value.shape == param.shape
                        and value.stride() != param.stride()):
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
