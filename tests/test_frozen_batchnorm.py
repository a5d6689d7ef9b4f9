"""ACCELERATION.FOLD_FROZEN_BATCHNORM: frozen BatchNorm folded into the convolution before it
computes the same function and gradients (exactly, up to float64 rounding here)."""
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model

from mask_former.engine.frozen_batchnorm import (
    FrozenBatchNormFoldedConv2d,
    fold_frozen_batchnorm,
    unfold_frozen_batchnorm,
)
from tiny_models import tiny_config


def _backbone_step(model, images):
    model.zero_grad(set_to_none=True)
    features = model.backbone(images)
    weights = torch.Generator().manual_seed(0)
    loss = sum((f * torch.randn(f.shape, generator=weights, dtype=f.dtype)).sum()
               for f in features.values())
    loss.backward()
    return ([f.detach() for f in features.values()]
            + [p.grad.clone() for p in model.backbone.parameters() if p.grad is not None])


def test_folded_backbone_equals_the_eager_one_and_unfolds():
    torch.manual_seed(0)
    model = build_model(tiny_config()).double().train()
    for module in model.modules():  # statistics that are not the identity
        if isinstance(module, FrozenBatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_()
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    expected = _backbone_step(model, images)
    folded = fold_frozen_batchnorm(model)
    assert folded == sum(isinstance(m, FrozenBatchNormFoldedConv2d) for m in model.modules()) > 0
    actual = _backbone_step(model, images)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, rtol=1e-10, atol=1e-12)
    assert model.state_dict().keys() == state.keys()  # checkpoints are unchanged
    assert unfold_frozen_batchnorm(model) == folded
    assert not any(isinstance(m, FrozenBatchNormFoldedConv2d) for m in model.modules())
    assert sum(type(m) is Conv2d for m in model.modules()) >= folded
