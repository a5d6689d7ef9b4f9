"""FrozenBatchNorm folded into the convolution before it (ACCELERATION.FOLD_FROZEN_BATCHNORM).

A frozen BatchNorm is a per-channel affine map, y = x * s + t, with s = gamma / sqrt(var + eps)
and t = beta - mean * s fixed. After a convolution, conv(x, W) * s + t = conv(x, W * s) + t: the
scaled weights are computed each call (a few thousand numbers; gradients still reach W through
them) and the shift becomes the convolution's bias. Eager, detectron2's FrozenBatchNorm2d makes
two full passes over the activation forward (multiply, add) and one backward when gradients are
recorded; folded, none remain beyond the bias. R50 has 53 such convolutions.

The module tree, parameters and state dict stay as they are: a folded convolution is the same
object with a subclass's forward (`fold_frozen_batchnorm` switches its class, `unfold` switches
it back).
"""
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn


class FrozenBatchNormFoldedConv2d(Conv2d):
    """A detectron2 Conv2d whose `norm` is a FrozenBatchNorm2d, computed as one convolution where
    gradients are recorded (training). Without gradients, FrozenBatchNorm2d is one fused
    batch_norm kernel already, and folding would add three small kernels per convolution to
    recompute the weights: there it runs as a plain Conv2d."""

    def forward(self, x):
        if not torch.is_grad_enabled():
            return super().forward(x)
        norm = self.norm
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()  # (C_out,)
        shift = norm.bias - norm.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias * scale
        weight = self.weight * scale.reshape(-1, 1, 1, 1).to(self.weight.dtype)
        x = F.conv2d(x, weight, shift, self.stride, self.padding, self.dilation, self.groups)
        if self.activation is not None:
            x = self.activation(x)
        return x


def _foldable(module: nn.Module) -> bool:
    return type(module) is Conv2d and isinstance(module.norm, FrozenBatchNorm2d)


def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Folds every frozen BatchNorm of `model` that follows a detectron2 Conv2d (as ResNet's do)
    into it, in place; returns how many were folded."""
    convs = [m for m in model.modules() if _foldable(m)]
    for conv in convs:
        conv.__class__ = FrozenBatchNormFoldedConv2d
    return len(convs)


def unfold_frozen_batchnorm(model: nn.Module) -> int:
    """Undoes `fold_frozen_batchnorm`; returns how many convolutions it restored."""
    convs = [m for m in model.modules() if type(m) is FrozenBatchNormFoldedConv2d]
    for conv in convs:
        conv.__class__ = Conv2d
    return len(convs)
