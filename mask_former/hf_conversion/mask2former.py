"""transformers' Mask2FormerForUniversalSegmentation as this project's Mask2Former: the config
keys and the weight-name table.

The names on the right are the official Mask2Former's (as the reference fixture
m2f_universal_r50_tiny.pt stores them): MSDeformAttnPixelDecoder under
`sem_seg_head.pixel_decoder.` and MultiScaleMaskedTransformerDecoder under
`sem_seg_head.predictor.`. transformers keeps the official layer order (cross-attention,
self-attention, FFN per layer; decoder_layers - 1 layers, as the official DEC_LAYERS) and the
input projections coarsest first. The backbones are MaskFormer's (maskformer.py).
"""
from typing import List

from . import maskformer
from .checkpoint import FUSE, ConversionError, Rename

ARCHITECTURE = "Mask2FormerForUniversalSegmentation"
PIXEL_DECODER = "MSDeformAttnPixelDecoder"
TRANSFORMER_DECODER = "MultiScaleMaskedTransformerDecoder"
# The official pixel decoder's encoder FFN width is fixed (not a config key).
OFFICIAL_ENCODER_FEEDFORWARD = 1024

PIXEL = r"^model\.pixel_level_module\.decoder\."
OURS_PIXEL = "sem_seg_head.pixel_decoder."
HEAD = r"^model\.transformer_module\."
OURS_HEAD = "sem_seg_head.predictor."

PIXEL_DECODER_RENAMES: List[Rename] = [
    (PIXEL + r"input_projections\.", OURS_PIXEL + "input_proj."),
    (PIXEL + r"level_embed$", OURS_PIXEL + "transformer.level_embed"),
    (PIXEL + r"encoder\.layers\.(\d+)\.self_attn\.",
     OURS_PIXEL + r"transformer.encoder.layers.\1.self_attn."),
    *[(PIXEL + rf"encoder\.layers\.(\d+)\.{hf}\.", OURS_PIXEL + rf"transformer.encoder.layers.\1.{ours}.")
      for hf, ours in (("self_attn_layer_norm", "norm1"), ("fc1", "linear1"), ("fc2", "linear2"),
                       ("final_layer_norm", "norm2"))],
    (PIXEL + r"mask_projection\.", OURS_PIXEL + "mask_features."),
    # The FPN on res2 (detectron2 Conv2d with its GroupNorm as `.norm`).
    (PIXEL + r"(adapter|layer)_(\d+)\.0\.weight$", OURS_PIXEL + r"\1_\2.weight"),
    (PIXEL + r"(adapter|layer)_(\d+)\.1\.", OURS_PIXEL + r"\1_\2.norm."),
]

LAYER = HEAD + r"decoder\.layers\.(\d+)\."
DECODER_RENAMES: List[Rename] = [
    (LAYER + r"self_attn\.([qkv])_proj\.(weight|bias)$",
     OURS_HEAD + rf"transformer_self_attention_layers.\1.self_attn.in_proj_\3{FUSE}\2"),
    (LAYER + r"self_attn\.(?:o|out)_proj\.", OURS_HEAD + r"transformer_self_attention_layers.\1.self_attn.out_proj."),
    (LAYER + r"self_attn_layer_norm\.", OURS_HEAD + r"transformer_self_attention_layers.\1.norm."),
    (LAYER + r"cross_attn\.", OURS_HEAD + r"transformer_cross_attention_layers.\1.multihead_attn."),
    (LAYER + r"cross_attn_layer_norm\.", OURS_HEAD + r"transformer_cross_attention_layers.\1.norm."),
    (LAYER + r"(?:mlp\.)?fc1\.", OURS_HEAD + r"transformer_ffn_layers.\1.linear1."),
    (LAYER + r"(?:mlp\.)?fc2\.", OURS_HEAD + r"transformer_ffn_layers.\1.linear2."),
    (LAYER + r"final_layer_norm\.", OURS_HEAD + r"transformer_ffn_layers.\1.norm."),
    (HEAD + r"decoder\.layernorm\.", OURS_HEAD + "decoder_norm."),
    (HEAD + r"decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.", OURS_HEAD + r"mask_embed.layers.\1."),
    (HEAD + r"queries_features\.", OURS_HEAD + "query_feat."),
    (HEAD + r"queries_embedder\.", OURS_HEAD + "query_embed."),
    (HEAD + r"level_embed\.", OURS_HEAD + "level_embed."),
    (r"^class_predictor\.", OURS_HEAD + "class_embed."),
    (r"^criterion\.empty_weight$", "criterion.empty_weight"),
]

DROPPED = maskformer.DROPPED


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ConversionError(f"unsupported {ARCHITECTURE} checkpoint: {what}")


def config_settings(hf_config) -> dict:
    """Config overrides (KEY: value) that build the checkpoint's model in this project."""
    _require(hf_config.activation_function == "relu",
             f"activation_function {hf_config.activation_function!r}")
    _require(not hf_config.pre_norm, "pre_norm (the official decoder is post-norm)")
    _require(hf_config.encoder_feedforward_dim == OFFICIAL_ENCODER_FEEDFORWARD,
             f"encoder_feedforward_dim {hf_config.encoder_feedforward_dim} (the official pixel "
             f"decoder's is {OFFICIAL_ENCODER_FEEDFORWARD})")
    return {
        **maskformer.backbone_settings(hf_config.backbone_config),
        "MODEL.META_ARCHITECTURE": "MaskFormer",
        "MODEL.SEM_SEG_HEAD.NAME": "MaskFormerHead",
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": PIXEL_DECODER,
        "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2", "res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": hf_config.common_stride,
        # transformers' encoder layers take the decoder's head count and 4 points
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": hf_config.num_attention_heads,
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": hf_config.encoder_layers,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": len(hf_config.id2label),
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": hf_config.feature_size,
        "MODEL.SEM_SEG_HEAD.MASK_DIM": hf_config.mask_feature_size,
        "MODEL.SEM_SEG_HEAD.NORM": "GN",
        "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": TRANSFORMER_DECODER,
        "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "multi_scale_pixel_decoder",
        "MODEL.MASK_FORMER.HIDDEN_DIM": hf_config.hidden_dim,
        "MODEL.MASK_FORMER.NHEADS": hf_config.num_attention_heads,
        "MODEL.MASK_FORMER.DIM_FEEDFORWARD": hf_config.dim_feedforward,
        "MODEL.MASK_FORMER.DEC_LAYERS": hf_config.decoder_layers,
        "MODEL.MASK_FORMER.PRE_NORM": False,
        "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": bool(hf_config.enforce_input_projection),
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": hf_config.num_queries,
        "MODEL.MASK_FORMER.DROPOUT": float(hf_config.dropout),
        "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": float(hf_config.no_object_weight),
        "MODEL.MASK_FORMER.CLASS_WEIGHT": float(hf_config.class_weight),
        "MODEL.MASK_FORMER.DICE_WEIGHT": float(hf_config.dice_weight),
        "MODEL.MASK_FORMER.MASK_WEIGHT": float(hf_config.mask_weight),
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": hf_config.train_num_points,
        "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": float(hf_config.oversample_ratio),
        "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": float(hf_config.importance_sample_ratio),
    }


def weight_renames(hf_config) -> List[Rename]:
    backbone = (maskformer.RESNET_RENAMES if hf_config.backbone_config.model_type == "resnet"
                else maskformer.SWIN_RENAMES)
    return backbone + PIXEL_DECODER_RENAMES + DECODER_RENAMES
