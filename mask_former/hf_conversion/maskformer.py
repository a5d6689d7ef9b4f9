"""transformers' MaskFormerForInstanceSegmentation (ResNet or Swin backbone) as this project's
MaskFormer: the config keys and the weight-name table.

transformers' model is the official one rebuilt: a backbone, the FPN pixel decoder
(`fpn.stem` is the coarsest output conv, `fpn.layers.i` the lateral + output convs from res4
down to res2), DETR's decoder (post-norm, no encoder layers, separate q/k/v projections, which
become `in_proj_weight`) and the class and mask-embedding heads. Its Swin (MaskFormerSwin) keeps
the configured window at every stage, as the official Swin does, and normalises each stage's
output (`hidden_states_norms.i`, here `norm{i}`).
"""
import re
from typing import List

from .checkpoint import FUSE, ConversionError, Rename

ARCHITECTURE = "MaskFormerForInstanceSegmentation"

HEAD = r"^model\.transformer_module\."
PIXEL = r"^model\.pixel_level_module\."
NUM_LATERALS = 3  # res4, res3, res2 (res5 goes through fpn.stem)

# detectron2's ResNet depth for each (block type, blocks per stage).
RESNET_DEPTHS = {("bottleneck", (3, 4, 6, 3)): 50, ("bottleneck", (3, 4, 23, 3)): 101,
                 ("bottleneck", (3, 8, 36, 3)): 152, ("basic", (2, 2, 2, 2)): 18,
                 ("basic", (3, 4, 6, 3)): 34}


def _lateral(match: re.Match) -> str:
    """fpn.layers.i (i = 0 for res4): `proj` (1x1 conv, GroupNorm) -> adapter_{3 - i}, `block`
    (3x3 conv, GroupNorm, ReLU) -> layer_{3 - i}; index 1 is res2."""
    index = NUM_LATERALS - int(match.group(1))
    name = {"proj": "adapter", "block": "layer"}[match.group(2)]
    part = "weight" if match.group(3) == "0" else "norm." + match.group(4)
    return f"sem_seg_head.pixel_decoder.{name}_{index}.{part}"


DECODER_RENAMES: List[Rename] = [
    (HEAD + r"queries_embedder\.", "sem_seg_head.predictor.query_embed."),
    (HEAD + r"input_projection\.", "sem_seg_head.predictor.input_proj."),
    (HEAD + r"decoder\.layernorm\.", "sem_seg_head.predictor.transformer.decoder.norm."),
    *[(HEAD + rf"decoder\.layers\.(\d+)\.{hf}_attn\.([qkv])_proj\.(weight|bias)$",
       rf"sem_seg_head.predictor.transformer.decoder.layers.\1.{ours}.in_proj_\3{FUSE}\2")
      for hf, ours in (("self", "self_attn"), ("encoder", "multihead_attn"))],
    *[(HEAD + rf"decoder\.layers\.(\d+)\.{hf}\.", rf"sem_seg_head.predictor.transformer.decoder.layers.\1.{ours}.")
      # Checkpoints name these out_proj and fc1/fc2 (transformers' modules, since v5: o_proj,
      # mlp.fc1/fc2); both spellings are read.
      for hf, ours in ((r"self_attn\.(?:o|out)_proj", "self_attn.out_proj"),
                       (r"encoder_attn\.(?:o|out)_proj", "multihead_attn.out_proj"),
                       (r"self_attn_layer_norm", "norm1"), (r"encoder_attn_layer_norm", "norm2"),
                       (r"final_layer_norm", "norm3"), (r"(?:mlp\.)?fc1", "linear1"),
                       (r"(?:mlp\.)?fc2", "linear2"))],
    (r"^class_predictor\.", "sem_seg_head.predictor.class_embed."),
    (r"^mask_embedder\.(\d+)\.0\.", r"sem_seg_head.predictor.mask_embed.layers.\1."),
    # The loss's class weights (1, ..., 1, NO_OBJECT_WEIGHT), a buffer in both.
    (r"^criterion\.empty_weight$", "criterion.empty_weight"),
]

PIXEL_DECODER_RENAMES: List[Rename] = [
    # Conv (no bias) and GroupNorm: detectron2's Conv2d holds its norm as `.norm`.
    (PIXEL + r"decoder\.fpn\.stem\.0\.weight$", f"sem_seg_head.pixel_decoder.layer_{NUM_LATERALS + 1}.weight"),
    (PIXEL + r"decoder\.fpn\.stem\.1\.", f"sem_seg_head.pixel_decoder.layer_{NUM_LATERALS + 1}.norm."),
    (PIXEL + r"decoder\.fpn\.layers\.(\d+)\.(proj|block)\.([01])\.(.*)$", _lateral),
    (PIXEL + r"decoder\.mask_projection\.", "sem_seg_head.pixel_decoder.mask_features."),
]

RESNET = PIXEL + r"encoder\."
RESNET_RENAMES: List[Rename] = [
    (RESNET + r"embedder\.embedder\.convolution\.", "backbone.stem.conv1."),
    (RESNET + r"embedder\.embedder\.normalization\.", "backbone.stem.conv1.norm."),
    (RESNET + r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.",
     lambda m: f"backbone.res{int(m.group(1)) + 2}.{m.group(2)}.shortcut."),
    (RESNET + r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.",
     lambda m: f"backbone.res{int(m.group(1)) + 2}.{m.group(2)}.shortcut.norm."),
    (RESNET + r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.convolution\.",
     lambda m: f"backbone.res{int(m.group(1)) + 2}.{m.group(2)}.conv{int(m.group(3)) + 1}."),
    (RESNET + r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.normalization\.",
     lambda m: f"backbone.res{int(m.group(1)) + 2}.{m.group(2)}.conv{int(m.group(3)) + 1}.norm."),
]

SWIN = PIXEL + r"encoder\."
SWIN_BLOCK = SWIN + r"model\.encoder\.layers\.(\d+)\.blocks\.(\d+)\."
SWIN_RENAMES: List[Rename] = [
    (SWIN + r"model\.embeddings\.patch_embeddings\.projection\.", "backbone.patch_embed.proj."),
    (SWIN + r"model\.embeddings\.norm\.", "backbone.patch_embed.norm."),
    (SWIN_BLOCK + r"attention\.self\.(query|key|value)\.(weight|bias)$",
     lambda m: f"backbone.layers.{m.group(1)}.blocks.{m.group(2)}.attn.qkv.{m.group(4)}{FUSE}{m.group(3)[0]}"),
    *[(SWIN_BLOCK + hf, rf"backbone.layers.\1.blocks.\2.{ours}")
      for hf, ours in ((r"layernorm_before\.", "norm1."), (r"layernorm_after\.", "norm2."),
                       (r"attention\.self\.relative_position_", "attn.relative_position_"),
                       (r"attention\.output\.dense\.", "attn.proj."),
                       (r"intermediate\.dense\.", "mlp.fc1."), (r"output\.dense\.", "mlp.fc2."))],
    (SWIN + r"model\.encoder\.layers\.(\d+)\.downsample\.", r"backbone.layers.\1.downsample."),
    (SWIN + r"hidden_states_norms\.(\d+)\.", r"backbone.norm\1."),
]

DROPPED = [
    r"num_batches_tracked$",  # BatchNorm's counter; detectron2's FrozenBN has none
    SWIN + r"model\.layernorm\.",  # the Swin classifier's final norm, unused by MaskFormer
]


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ConversionError(f"unsupported {ARCHITECTURE} checkpoint: {what}")


def backbone_settings(backbone) -> dict:
    """Config overrides of the checkpoint's backbone config (ResNetConfig, (MaskFormer)SwinConfig)."""
    kind = backbone.model_type
    if kind == "resnet":
        depths = tuple(backbone.depths)
        depth = RESNET_DEPTHS.get((backbone.layer_type, depths))
        _require(depth is not None, f"ResNet {backbone.layer_type} with depths {list(depths)} "
                 f"(detectron2 builds {sorted(RESNET_DEPTHS.values())})")
        widths = list(backbone.hidden_sizes)
        _require(widths == [widths[0] * 2 ** i for i in range(4)],
                 f"ResNet hidden_sizes {widths}: detectron2 doubles the width at every stage")
        _require(backbone.hidden_act == "relu", f"ResNet hidden_act {backbone.hidden_act!r}")
        _require(not backbone.downsample_in_first_stage, "ResNet downsample_in_first_stage")
        bottleneck = widths[0] // 4 if backbone.layer_type == "bottleneck" else widths[0]
        return {"MODEL.BACKBONE.NAME": "build_resnet_backbone", "MODEL.BACKBONE.FREEZE_AT": 0,
                "MODEL.RESNETS.DEPTH": depth, "MODEL.RESNETS.NORM": "FrozenBN",
                "MODEL.RESNETS.STEM_OUT_CHANNELS": backbone.embedding_size,
                "MODEL.RESNETS.RES2_OUT_CHANNELS": widths[0],
                "MODEL.RESNETS.WIDTH_PER_GROUP": bottleneck, "MODEL.RESNETS.NUM_GROUPS": 1,
                "MODEL.RESNETS.STRIDE_IN_1X1": bool(backbone.downsample_in_bottleneck),
                "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"]}
    _require(kind in ("swin", "maskformer-swin"), f"backbone model_type {kind!r} "
             "(supported: resnet, swin, maskformer-swin)")
    _require(not backbone.use_absolute_embeddings, "Swin use_absolute_embeddings")
    _require(backbone.hidden_act == "gelu", f"Swin hidden_act {backbone.hidden_act!r}")
    _require(abs(backbone.layer_norm_eps - 1e-5) < 1e-12,
             f"Swin layer_norm_eps {backbone.layer_norm_eps} (this Swin uses 1e-5)")
    image_size = backbone.image_size
    return {"MODEL.BACKBONE.NAME": "D2SwinTransformer",
            "MODEL.SWIN.EMBED_DIM": backbone.embed_dim,
            "MODEL.SWIN.DEPTHS": list(backbone.depths),
            "MODEL.SWIN.NUM_HEADS": list(backbone.num_heads),
            "MODEL.SWIN.WINDOW_SIZE": backbone.window_size,
            "MODEL.SWIN.PATCH_SIZE": backbone.patch_size,
            "MODEL.SWIN.MLP_RATIO": float(backbone.mlp_ratio),
            "MODEL.SWIN.QKV_BIAS": bool(backbone.qkv_bias),
            "MODEL.SWIN.PRETRAIN_IMG_SIZE": image_size if isinstance(image_size, int) else image_size[0],
            "MODEL.SWIN.DROP_PATH_RATE": float(backbone.drop_path_rate),
            "MODEL.SWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"]}


def config_settings(hf_config) -> dict:
    """Config overrides (KEY: value) that build the checkpoint's model in this project."""
    decoder = hf_config.decoder_config
    _require(decoder.model_type == "detr", f"decoder model_type {decoder.model_type!r}")
    _require(decoder.activation_function == "relu",
             f"decoder activation_function {decoder.activation_function!r}")
    # With auxiliary_loss, transformers' DETR decoder feeds each layer's normalised output to the
    # next layer, which the official decoder (and this one) does not.
    _require(not decoder.auxiliary_loss, "decoder_config.auxiliary_loss (its layers then read "
             "normalised inputs, unlike the official decoder)")
    return {
        **backbone_settings(hf_config.backbone_config),
        "MODEL.META_ARCHITECTURE": "MaskFormer",
        "MODEL.SEM_SEG_HEAD.NAME": "MaskFormerHead",
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
        "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2", "res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": len(hf_config.id2label),
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": hf_config.fpn_feature_size,
        "MODEL.SEM_SEG_HEAD.MASK_DIM": hf_config.mask_feature_size,
        "MODEL.SEM_SEG_HEAD.NORM": "GN",
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "TransformerPredictor",
        "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5",
        "MODEL.MASK_FORMER.HIDDEN_DIM": decoder.d_model,
        "MODEL.MASK_FORMER.NHEADS": decoder.decoder_attention_heads,
        "MODEL.MASK_FORMER.DIM_FEEDFORWARD": decoder.decoder_ffn_dim,
        "MODEL.MASK_FORMER.DEC_LAYERS": decoder.decoder_layers,
        "MODEL.MASK_FORMER.ENC_LAYERS": 0,
        "MODEL.MASK_FORMER.PRE_NORM": False,
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": decoder.num_queries,
        "MODEL.MASK_FORMER.DROPOUT": float(decoder.dropout),
        "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": float(hf_config.no_object_weight),
        "MODEL.MASK_FORMER.CLASS_WEIGHT": float(hf_config.cross_entropy_weight),
        "MODEL.MASK_FORMER.DICE_WEIGHT": float(hf_config.dice_weight),
        "MODEL.MASK_FORMER.MASK_WEIGHT": float(hf_config.mask_weight),
    }


def weight_renames(hf_config) -> List[Rename]:
    backbone = RESNET_RENAMES if hf_config.backbone_config.model_type == "resnet" else SWIN_RENAMES
    return backbone + PIXEL_DECODER_RENAMES + DECODER_RENAMES
