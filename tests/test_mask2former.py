"""Mask2Former's modules: the official configs load and build, masked attention stays inside the
previous masks, the decoder's outputs, a training step, checkpoint formats, config errors."""
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch import nn

from mask_former import add_mask_former_config
from mask_former.errors import ConfigError
from mask_former.modeling import (
    MSDeformAttnPixelDecoder,
    MultiScaleMaskedTransformerDecoder,
    StandardTransformerDecoder,
    TransformerPredictor,
)
from mask_former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    masked_attention_mask,
)
from mask_former.modeling.transformer_decoder.transformer import MultiheadAttention

from helpers import relative_error
from tiny_models import tiny_batch, tiny_config

CONFIGS = Path(__file__).resolve().parent / "data" / "mask2former_configs"

# The keys Mask2Former's add_maskformer2_config adds beyond MaskFormer's, with its defaults.
MASK2FORMER_DEFAULTS = {
    "INPUT.IMAGE_SIZE": 1024,
    "INPUT.MIN_SCALE": 0.1,
    "INPUT.MAX_SCALE": 2.0,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 8,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0,
    "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": True,
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON": False,
    "MODEL.SWIN.USE_CHECKPOINT": False,
}
# Where this project keeps MaskFormer's behaviour for configs that do not set the key (all
# official Mask2Former configs set both): Mask2Former's defaults are
# "MultiScaleMaskedTransformerDecoder" and 112 * 112.
MASKFORMER_DEFAULTS = {
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "TransformerPredictor",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 0,
}


def get(cfg, dotted):
    node = cfg
    for key in dotted.split("."):
        node = node[key]
    return list(node) if isinstance(node, (list, tuple)) else node


def load(name):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.merge_from_file(str(CONFIGS / name))
    return cfg


def test_mask2former_keys_have_the_official_defaults():
    cfg = get_cfg()
    add_mask_former_config(cfg)
    for key, value in {**MASK2FORMER_DEFAULTS, **MASKFORMER_DEFAULTS}.items():
        assert get(cfg, key) == value, key


def test_every_mask2former_key_loads():
    cfg = load("every_mask2former_key.yaml")
    expected = {
        "INPUT.IMAGE_SIZE": 768, "INPUT.MIN_SCALE": 0.5, "INPUT.MAX_SCALE": 1.5,
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res4", "res5"],
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 8,
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 4,
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
        "MODEL.MASK_FORMER.CLASS_WEIGHT": 2.0, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 12544,
        "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 2.0,
        "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.5,
        "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": True,
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": False, "MODEL.MASK_FORMER.TEST.INSTANCE_ON": True,
        "MODEL.SWIN.USE_CHECKPOINT": True,
    }
    for key, value in expected.items():
        assert get(cfg, key) == value, key


@pytest.mark.parametrize("name, num_classes, instance_on", [
    ("ade20k_maskformer2_R50_bs16_160k.yaml", 150, False),
    ("coco_panoptic_maskformer2_R50_bs16_50ep.yaml", 133, True),
])
def test_official_configs_load(name, num_classes, instance_on):
    cfg = load(name)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == num_classes
    assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder"
    assert cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder"
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10
    assert cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON is instance_on


@torch.no_grad()
def test_official_r50_model_builds_with_the_paper_size_and_predicts():
    """Mask2Former R50: 44M parameters (paper, Table 1); 9 layers give 10 predictions."""
    cfg = load("ade20k_maskformer2_R50_bs16_160k.yaml")
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(44.0, abs=0.1)
    head = model.sem_seg_head
    assert type(head.pixel_decoder) is MSDeformAttnPixelDecoder
    assert type(head.predictor) is MultiScaleMaskedTransformerDecoder
    assert len(head.predictor.transformer_cross_attention_layers) == 9
    outputs = head(model.backbone(torch.randn(1, 3, 64, 96)))
    assert outputs["pred_logits"].shape == (1, 100, 151)
    assert outputs["pred_masks"].shape == (1, 100, 16, 24)
    assert len(outputs["aux_outputs"]) == 9


def test_attention_mask_threshold_and_empty_masks():
    logits = torch.tensor([[[[1.0, -1.0], [0.0, -2.0]],  # sigmoid(0) = 0.5 is inside
                            [[-1.0, -3.0], [-0.5, -9.0]]]])  # empty: attends everywhere
    expected = torch.tensor([[[False, True, False, True], [False, False, False, False]]])
    assert torch.equal(masked_attention_mask(logits, (2, 2)), expected)


class FixedEmbeddings(nn.Module):
    """Stands in for the mask-embedding MLP: query q's embedding is embeddings[q]."""

    def __init__(self, embeddings):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, queries):  # (B, Q, C) -> (B, Q, mask_dim)
        return self.embeddings.expand(queries.shape[0], -1, -1)


@torch.no_grad()
def test_masked_cross_attention_stays_inside_the_previous_masks():
    """Queries whose masks from the learnable queries cover the left half, the right half, the
    top half and nothing of the image: the first layer's cross-attention weights are exactly 0
    outside each mask, and the empty one attends everywhere.

    The coarsest map has 16 pixels and 16 channels, pixel j's value the one-hot e_j; with identity
    value and output projections the attention's output rows are its weights."""
    torch.manual_seed(0)
    pixels = 16
    decoder = MultiScaleMaskedTransformerDecoder(
        in_channels=pixels, num_classes=3, hidden_dim=pixels, num_queries=4, nheads=1,
        dim_feedforward=8, dec_layers=1, pre_norm=False, mask_dim=3, enforce_input_project=False)
    attention = decoder.transformer_cross_attention_layers[0].multihead_attn
    attention.in_proj_weight[2 * pixels:] = torch.eye(pixels)
    attention.in_proj_bias.zero_()
    attention.out_proj.weight.copy_(torch.eye(pixels))
    attention.out_proj.bias.zero_()
    decoder.level_embed.weight.zero_()
    decoder.mask_embed = FixedEmbeddings(torch.tensor(
        [[10.0, 0, 0], [-10.0, 0, 0], [0, 10.0, 0], [0, 0, -10.0]]))
    weights = []
    attention.register_forward_hook(lambda module, args, output: weights.append(output))

    one_hot = torch.eye(pixels).view(pixels, 4, 4)[None].repeat(2, 1, 1, 1)  # (B, 16, 4, 4)
    maps = [one_hot, torch.randn(2, pixels, 8, 8), torch.randn(2, pixels, 2, 2)]
    left = torch.zeros(8, 8)
    left[:, :4] = 1
    top = torch.zeros(8, 8)
    top[:4] = 1
    # Channels: +1 left / -1 right, +1 top / -1 bottom, 1 everywhere (mask features at 8 x 8).
    mask_features = torch.stack([2 * left - 1, 2 * top - 1, torch.ones(8, 8)])[None].repeat(2, 1, 1, 1)
    decoder(maps, mask_features)

    w = weights[0].view(2, 4, 4, 4)  # (B, Q, 4, 4) over the coarsest map's pixels
    allowed = torch.zeros(4, 4, 4, dtype=torch.bool)
    allowed[0, :, :2] = True  # left half
    allowed[1, :, 2:] = True  # right half
    allowed[2, :2] = True  # top half
    allowed[3] = True  # empty mask: everywhere
    allowed = allowed.expand(2, -1, -1, -1)
    assert torch.count_nonzero(w[~allowed]) == 0
    assert bool((w[allowed] > 0).all())
    torch.testing.assert_close(w.sum((-2, -1)), torch.ones(2, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_masked_attention_on_gpu_matches_cpu():
    """The GPU path (scaled_dot_product_attention with a mask) against the CPU one
    (nn.MultiheadAttention's order), with an attention mask per query and key padding."""
    torch.manual_seed(0)
    attention = MultiheadAttention(32, 4)
    query, key, value = torch.randn(2, 7, 32), torch.randn(2, 50, 32), torch.randn(2, 50, 32)
    attn_mask = torch.rand(2, 7, 50) < 0.7
    attn_mask[:, :, 0] = False  # every query keeps a key
    key_padding_mask = torch.zeros(2, 50, dtype=torch.bool)
    key_padding_mask[1, 40:] = True
    cpu = attention(query, key, value, key_padding_mask, attn_mask)
    gpu = attention.cuda()(query.cuda(), key.cuda(), value.cuda(), key_padding_mask.cuda(),
                           attn_mask.cuda())
    assert relative_error(gpu.cpu(), cpu) < 1e-5


def tiny_mask2former_config():
    cfg = tiny_config()
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 4
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 4  # 3 layers: one on each level
    return cfg


@torch.no_grad()
def test_first_prediction_comes_from_the_learnable_queries_alone():
    """The prediction before any layer depends on the image only through the mask features:
    its class logits are the same for every image."""
    torch.manual_seed(0)
    model = build_model(tiny_mask2former_config()).eval()
    images = model.preprocess_images(tiny_batch(sizes=((64, 64), (64, 64))))
    outputs = model.sem_seg_head(model.backbone(images.tensor))
    assert [a["pred_masks"].shape for a in outputs["aux_outputs"]] == [(2, 8, 16, 16)] * 3
    first = outputs["aux_outputs"][0]["pred_logits"]
    assert torch.equal(first[0], first[1])
    assert not torch.equal(outputs["pred_logits"][0], outputs["pred_logits"][1])


def test_training_step_reaches_every_part():
    torch.manual_seed(0)
    model = build_model(tiny_mask2former_config()).train()
    losses = model(tiny_batch())
    assert set(losses) == {f"{name}{suffix}" for name in ("loss_ce", "loss_mask", "loss_dice")
                           for suffix in ("", "_0", "_1", "_2")}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    head = model.sem_seg_head
    for name, parameter in [
        ("sampling_offsets", head.pixel_decoder.transformer.encoder.layers[0].self_attn.sampling_offsets.weight),
        # (not yet the encoder's level_embed: it enters through the queries, which do not
        # steer the sampling until sampling_offsets and attention_weights leave their zeros)
        ("encoder input_proj", head.pixel_decoder.input_proj[0][0].weight),
        ("query_feat", head.predictor.query_feat.weight),
        ("decoder level_embed", head.predictor.level_embed.weight),
        ("last cross-attention", head.predictor.transformer_cross_attention_layers[2].multihead_attn.in_proj_weight),
    ]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_first_format_checkpoints_with_static_query_load():
    torch.manual_seed(0)
    decoder = build_model(tiny_mask2former_config()).sem_seg_head.predictor
    state = dict(decoder.state_dict())  # a plain dict: no version metadata, as old checkpoints
    state["static_query.weight"] = state.pop("query_feat.weight") + 1
    decoder.load_state_dict(state, strict=True)
    assert torch.equal(decoder.query_feat.weight, state["static_query.weight"])
    # A version 2 checkpoint has no such key: strict loading says so.
    current = decoder.state_dict()
    current["static_query.weight"] = current.pop("query_feat.weight")
    with pytest.raises(RuntimeError, match="static_query"):
        decoder.load_state_dict(current, strict=True)


def test_standard_transformer_decoder_is_maskformers_under_mask2formers_name():
    models = {}
    for name in ("TransformerPredictor", "StandardTransformerDecoder"):
        cfg = tiny_config()
        cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = name
        torch.manual_seed(0)
        models[name] = build_model(cfg)
    standard = models["StandardTransformerDecoder"].sem_seg_head.predictor
    assert isinstance(standard, StandardTransformerDecoder) and isinstance(standard, TransformerPredictor)
    expected = models["TransformerPredictor"].state_dict()
    actual = models["StandardTransformerDecoder"].state_dict()
    assert list(actual) == list(expected)
    assert all(torch.equal(actual[k], expected[k]) for k in expected)


def test_encoder_features_outside_in_features_are_named():
    cfg = tiny_mask2former_config()
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4"]
    with pytest.raises(ConfigError, match=r"DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES=\['res3', "
                                          r"'res4', 'res5'\].*missing: \['res5'\]"):
        build_model(cfg)


def test_common_stride_without_fpn_features_is_named():
    cfg = tiny_mask2former_config()
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 2
    with pytest.raises(ConfigError, match="COMMON_STRIDE=2: the encoder's finest stride is 8, "
                                          "and 1 finer features"):
        build_model(cfg)


def test_no_decoder_layers_is_named():
    cfg = tiny_mask2former_config()
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 0
    with pytest.raises(ConfigError, match="DEC_LAYERS=0"):
        build_model(cfg)


def test_single_map_input_names_the_key_to_change():
    cfg = tiny_mask2former_config()
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    model = build_model(cfg).eval()
    with pytest.raises(ConfigError, match="got one map: set MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE "
                                          "to 'multi_scale_pixel_decoder'"):
        model(tiny_batch())


def test_the_deformable_encoder_runs_in_float32_under_autocast_unless_mixed_precision_is_asked():
    from tiny_models import tiny_mask2former_config

    outputs = {}
    for mixed in (False, True):
        cfg = tiny_mask2former_config()
        cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_MIXED_PRECISION = mixed
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        decoder = model.sem_seg_head.pixel_decoder
        torch.manual_seed(1)
        features = model.backbone(torch.randn(1, 3, 64, 96))
        with torch.no_grad():
            reference = decoder.forward_features(features)[0]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outputs[mixed] = decoder.forward_features(features)[0]
    assert outputs[False].dtype == torch.float32 and torch.equal(outputs[False], reference)
    assert outputs[True].dtype == torch.bfloat16
    assert 0 < relative_error(outputs[True].float(), reference) < 5e-2


@pytest.mark.parametrize("mask2former,key", [(True, "TRITON_DEFORMABLE_ATTENTION"),
                                              (False, "TRITON_MATCHING"),
                                              (False, "TRITON_SEMANTIC_MAPS")])
def test_triton_paths_without_triton_name_their_key(monkeypatch, mask2former, key):
    """On a GPU without the triton package, accelerate() refuses in one line naming the key
    (simulated on the CPU: the device check passes, triton's module spec is missing); each
    case turns on only its own Triton key (TRITON_SEMANTIC_MAPS is on by default)."""
    import importlib
    import importlib.util

    from tiny_models import tiny_config, tiny_mask2former_config

    accelerate_module = importlib.import_module("mask_former.engine.accelerate")
    cfg = tiny_mask2former_config() if mask2former else tiny_config()
    triton_keys = ["TRITON_DEFORMABLE_ATTENTION", "TRITON_MATCHING", "TRITON_SEMANTIC_MAPS"]
    cfg.merge_from_list([item for name in triton_keys
                         for item in (f"ACCELERATION.{name}", name == key)])
    model = build_model(cfg)
    monkeypatch.setattr(accelerate_module, "_on_cuda", lambda cfg: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "triton" else real_find_spec(name, *args))
    with pytest.raises(ConfigError, match=f"ACCELERATION.{key}"):
        accelerate_module.accelerate(model, cfg)
