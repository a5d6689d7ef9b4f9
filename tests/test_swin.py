"""Tests of the Swin Transformer backbone: shapes, checkpoint names, windows, masks, freezing."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from mask_former.config import add_mask_former_config
from mask_former.modeling.backbone.swin import (
    MASKED_LOGIT,
    D2SwinTransformer,
    DropPath,
    SwinTransformer,
    WindowAttention,
    shifted_window_attention_mask,
    window_partition,
    window_reverse,
)

EMBED_DIM = 12
DEPTHS = [2, 2, 2, 2]
NUM_HEADS = [1, 1, 2, 2]
WINDOW = 3


def tiny_swin_config(**overrides):
    """A detectron2 config of a tiny Swin: 12 channels, two blocks per stage, window 3."""
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = EMBED_DIM
    cfg.MODEL.SWIN.DEPTHS = DEPTHS
    cfg.MODEL.SWIN.NUM_HEADS = NUM_HEADS
    cfg.MODEL.SWIN.WINDOW_SIZE = WINDOW
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.0
    for key, value in overrides.items():
        setattr(cfg.MODEL.SWIN, key, value)
    return cfg


def build_tiny(seed: int = 0, channels: int = 3, **overrides) -> D2SwinTransformer:
    torch.manual_seed(seed)
    backbone = build_backbone(tiny_swin_config(**overrides), ShapeSpec(channels=channels))
    assert isinstance(backbone, D2SwinTransformer)
    return backbone


def test_odd_input_shapes_match_output_shape():
    backbone = build_tiny().eval()
    shapes = backbone.output_shape()
    assert {name: (s.channels, s.stride) for name, s in shapes.items()} == {
        "res2": (12, 4), "res3": (24, 8), "res4": (48, 16), "res5": (96, 32)}
    assert backbone.size_divisibility == 32

    torch.manual_seed(1)
    height, width = 67, 93
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, height, width))
    assert list(features) == ["res2", "res3", "res4", "res5"]
    for name, feature in features.items():
        stride = shapes[name].stride
        expected = (1, shapes[name].channels, math.ceil(height / stride), math.ceil(width / stride))
        assert tuple(feature.shape) == expected, name
        assert torch.isfinite(feature).all()


def test_out_features_subset_keeps_all_stage_norms():
    backbone = build_tiny(OUT_FEATURES=["res3", "res5"]).eval()
    assert set(backbone.output_shape()) == {"res3", "res5"}
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    assert set(features) == {"res3", "res5"}
    assert tuple(features["res5"].shape) == (2, 96, 2, 2)
    # All four stages are normalised, as in the official checkpoints.
    names = set(backbone.state_dict())
    assert {f"norm{i}.weight" for i in range(4)} <= names


def test_forward_rejects_non_4d_input():
    backbone = build_tiny()
    with pytest.raises(AssertionError, match="N, C, H, W"):
        backbone(torch.randn(3, 32, 32))


def test_input_channels_from_input_shape():
    backbone = build_tiny(channels=1)
    assert tuple(backbone.patch_embed.proj.weight.shape) == (EMBED_DIM, 1, 4, 4)


def test_state_dict_names_and_shapes_match_official_checkpoints():
    backbone = build_tiny(APE=True, PRETRAIN_IMG_SIZE=32)
    shapes = {name: tuple(t.shape) for name, t in backbone.state_dict().items()}
    table_rows = (2 * WINDOW - 1) ** 2
    expected = {
        "absolute_pos_embed": (1, 12, 8, 8),
        "patch_embed.proj.weight": (12, 3, 4, 4),
        "patch_embed.proj.bias": (12,),
        "patch_embed.norm.weight": (12,),
        "layers.0.blocks.0.norm1.weight": (12,),
        "layers.0.blocks.1.attn.relative_position_bias_table": (table_rows, 1),
        "layers.0.blocks.1.attn.relative_position_index": (WINDOW ** 2, WINDOW ** 2),
        "layers.0.blocks.1.attn.qkv.weight": (36, 12),
        "layers.0.blocks.1.attn.qkv.bias": (36,),
        "layers.0.blocks.1.attn.proj.weight": (12, 12),
        "layers.0.blocks.1.norm2.bias": (12,),
        "layers.0.blocks.1.mlp.fc1.weight": (48, 12),
        "layers.0.blocks.1.mlp.fc2.weight": (12, 48),
        "layers.2.blocks.0.attn.relative_position_bias_table": (table_rows, 2),
        "layers.0.downsample.reduction.weight": (24, 48),
        "layers.0.downsample.norm.weight": (48,),
        "layers.2.downsample.reduction.weight": (96, 192),
        "norm0.weight": (12,),
        "norm3.bias": (96,),
    }
    for name, shape in expected.items():
        assert shapes.get(name) == shape, name
    # Patch merging has no bias and the last stage no downsampling.
    assert "layers.0.downsample.reduction.bias" not in shapes
    assert not any(name.startswith("layers.3.downsample") for name in shapes)
    # Every name is one of the official checkpoint's kinds.
    allowed_parts = ("patch_embed.", "absolute_pos_embed", "layers.", "norm")
    assert all(name.startswith(allowed_parts) for name in shapes)


def test_relative_position_index_of_a_2x2_window():
    attention = WindowAttention(dim=4, window_size=(2, 2), num_heads=2)
    # Tokens (0,0), (0,1), (1,0), (1,1); entry [i, j] = (dh + 1) * 3 + (dw + 1) with
    # (dh, dw) = position i - position j.
    expected = torch.tensor([
        [4, 3, 1, 0],
        [5, 4, 2, 1],
        [7, 6, 4, 3],
        [8, 7, 5, 4],
    ])
    assert torch.equal(attention.relative_position_index, expected)
    assert "relative_position_index" in attention.state_dict()  # persistent buffer
    assert tuple(attention.relative_position_bias_table.shape) == (9, 2)
    bias = attention.relative_position_bias()
    assert tuple(bias.shape) == (2, 4, 4)
    # The diagonal (offset 0) reads one table row for every token.
    table = attention.relative_position_bias_table
    assert torch.equal(bias[:, range(4), range(4)], table[4][:, None].expand(2, 4))


def test_shifted_window_mask_of_a_4x4_map():
    # Window 2, shift 1. After the roll, region labels over the 4x4 map are
    #   0 0 1 2
    #   0 0 1 2
    #   3 3 4 5
    #   6 6 7 8
    # so the four windows hold labels [0,0,0,0], [1,2,1,2], [3,3,6,6] and [4,5,7,8].
    mask = shifted_window_attention_mask(4, 4, window_size=2, shift_size=1)
    assert tuple(mask.shape) == (4, 4, 4)
    labels = torch.tensor([[0, 0, 0, 0], [1, 2, 1, 2], [3, 3, 6, 6], [4, 5, 7, 8]])
    for window, window_labels in enumerate(labels):
        same = window_labels[:, None] == window_labels[None, :]
        expected = torch.where(same, 0.0, MASKED_LOGIT)
        assert torch.equal(mask[window], expected), window
    assert torch.equal(mask[0], torch.zeros(4, 4))
    assert (mask[3] == MASKED_LOGIT).sum() == 12  # only the diagonal is open


def test_masked_window_attention_does_not_mix_regions():
    torch.manual_seed(0)
    attention = WindowAttention(dim=4, window_size=(2, 2), num_heads=2).eval()
    mask = shifted_window_attention_mask(4, 4, window_size=2, shift_size=1)
    x = torch.randn(2 * 4, 4, 4)  # two images, four windows each
    changed = x.clone()
    changed[1, 1] += 10.0  # image 0, window 1, token 1 (region 2)
    with torch.no_grad():
        before, after = attention(x, mask), attention(changed, mask)
    # Tokens 0 and 2 of that window (region 1) do not see the change; token 3 (region 2) does.
    assert torch.allclose(before[1, [0, 2]], after[1, [0, 2]])
    assert not torch.allclose(before[1, 3], after[1, 3])
    # Other windows and the other image are untouched.
    others = [i for i in range(8) if i != 1]
    assert torch.allclose(before[others], after[others])
    # Without the mask every token of the window sees it.
    with torch.no_grad():
        assert not torch.allclose(attention(x)[1, 0], attention(changed)[1, 0])


def test_stochastic_depth_rates_rise_linearly():
    backbone = build_tiny(DROP_PATH_RATE=0.7)
    rates = [getattr(block.drop_path, "drop_prob", 0.0)
             for layer in backbone.layers for block in layer.blocks]
    assert rates == pytest.approx([0.1 * i for i in range(8)])
    assert isinstance(backbone.layers[3].blocks[1].drop_path, DropPath)


def test_gradients_reach_every_parameter_with_drop_path():
    backbone = build_tiny(DROP_PATH_RATE=0.3, APE=True, PRETRAIN_IMG_SIZE=64).train()
    torch.manual_seed(2)
    features = backbone(torch.randn(2, 3, 45, 38))
    sum(feature.sum() for feature in features.values()).backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert backbone.absolute_pos_embed.grad.abs().sum() > 0
    assert backbone.layers[0].blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0


def test_eval_output_is_deterministic():
    backbone = build_tiny(DROP_PATH_RATE=0.5, DROP_RATE=0.2, ATTN_DROP_RATE=0.2).eval()
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        first, second = backbone(x), backbone(x)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_frozen_stages():
    torch.manual_seed(0)
    kwargs = dict(embed_dim=EMBED_DIM, depths=DEPTHS, num_heads=NUM_HEADS, window_size=WINDOW)
    model = SwinTransformer(frozen_stages=0, **kwargs).train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not model.patch_embed.training  # stays in eval mode through .train()
    assert all(p.requires_grad for p in model.layers.parameters())

    model = SwinTransformer(frozen_stages=2, ape=True, **kwargs).train()
    assert not model.absolute_pos_embed.requires_grad
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert not model.layers[0].training
    assert all(p.requires_grad for p in model.layers[1].parameters())
    assert model.layers[1].training


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    """MODEL.SWIN.USE_CHECKPOINT: each block runs again in the backward pass (stochastic depth
    draws the same numbers there), and loss and gradients are those without it."""
    results = {}
    for use_checkpoint in (False, True):
        backbone = build_tiny(seed=0, DROP_PATH_RATE=0.3, USE_CHECKPOINT=use_checkpoint).train()
        calls = []
        for layer in backbone.layers:
            for block in layer.blocks:
                # A pre-hook: the recomputation stops as soon as it has what backward needs.
                block.register_forward_pre_hook(lambda module, args: calls.append(module))
        torch.manual_seed(1)
        images = torch.randn(2, 3, 38, 45)
        loss = sum(feature.square().mean() for feature in backbone(images).values())
        loss.backward()
        grads = {name: p.grad.clone() for name, p in backbone.named_parameters()}
        results[use_checkpoint] = loss.detach(), grads, len(calls)
    (loss, grads, calls), (loss_ckpt, grads_ckpt, calls_ckpt) = results[False], results[True]
    assert calls == sum(DEPTHS) and calls_ckpt == 2 * sum(DEPTHS)
    assert torch.equal(loss, loss_ckpt)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-6, atol=1e-9, msg=name)


def test_activation_checkpointing_is_off_in_eval():
    backbone = build_tiny(USE_CHECKPOINT=True).eval()
    calls = []
    backbone.layers[0].blocks[0].register_forward_pre_hook(lambda *args: calls.append(1))
    sum(f.sum() for f in backbone(torch.randn(1, 3, 32, 32)).values()).backward()
    assert calls == [1]  # not run again in the backward pass


@pytest.mark.parametrize("height, width", [(224, 448), (32, 96), (96, 32), (1, 1100)])
def test_one_window_high_or_wide_maps(height, width):
    # Window 7: a 224x448 image gives a 7x14 stride-32 map, one window high and two wide. The
    # window partition of a one-row window grid used to be a non-contiguous view, which the
    # following .view() refused ("view size is not compatible with input tensor's size").
    torch.manual_seed(0)
    backbone = build_tiny(WINDOW_SIZE=7).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, height, width))
    for name, feature in features.items():
        stride = backbone.output_shape()[name].stride
        expected = (1, 96 // 2 ** (5 - int(name[-1])), math.ceil(height / stride),
                    math.ceil(width / stride))
        assert tuple(feature.shape) == expected, name
        assert torch.isfinite(feature).all(), name


def test_window_partition_is_contiguous_and_inverted_by_window_reverse():
    x = torch.arange(1 * 3 * 9 * 2, dtype=torch.float32).view(1, 3, 9, 2)  # one window row
    windows = window_partition(x, 3)
    assert tuple(windows.shape) == (3, 3, 3, 2)
    assert windows.is_contiguous()
    assert torch.equal(windows[1], x[0, :, 3:6])  # the second window of the row
    assert torch.equal(window_reverse(windows, 3, 3, 9), x)
