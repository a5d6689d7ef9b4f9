"""Config keys of MaskFormer and Mask2Former, with the official repositories' names and defaults.

A config written for the official MaskFormer (facebookresearch/MaskFormer) or Mask2Former
(facebookresearch/Mask2Former) loads unchanged after `add_mask_former_config(cfg)`. Where the two
defaults differ, MaskFormer's is kept (TRANSFORMER_DECODER_NAME): Mask2Former's configs set
theirs.
"""
from detectron2.config import CfgNode as CN
from detectron2.projects.deeplab import add_deeplab_config


def add_mask_former_config(cfg: CN) -> None:
    """Adds MaskFormer's keys to a detectron2 config, in place.

    Also adds DeepLab's keys (poly learning-rate schedule, dilated ResNet stems), which the
    official training script adds before MaskFormer's and its configs use.
    """
    add_deeplab_config(cfg)
    # ---- data
    # Dataset mapper, picked by name in train_net.py.
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    # SSD-style photometric augmentation during training.
    cfg.INPUT.COLOR_AUG_SSD = False
    # The random crop is retried until no single category covers more than this fraction of it.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad images and label maps to a multiple of this size in the dataset mapper (-1: no padding).
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Large-scale jitter (Mask2Former's COCO recipes): images rescaled by a random factor in
    # [MIN_SCALE, MAX_SCALE] of IMAGE_SIZE, then cropped or padded to IMAGE_SIZE. Read by the LSJ
    # dataset mappers (coco_panoptic_lsj, coco_instance_lsj), which Mask2Former's phase 2 adds.
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    # ---- solver
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Learning rate of the backbone relative to SOLVER.BASE_LR.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Autocast precision with SOLVER.AMP.ENABLED: "float16" (with loss scaling, as detectron2)
    # or "bfloat16" (float32's range: no loss scaling needed). Not an official key.
    cfg.SOLVER.AMP.PRECISION = "float16"

    # ---- model
    cfg.MODEL.MASK_FORMER = CN()
    # losses
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0
    # Points per mask for Mask2Former's point-sampled matching and mask losses (its configs set
    # 12544 = 112 * 112). 0, the default here, selects MaskFormer's focal + dice losses on whole
    # masks, so that the official MaskFormer configs, which do not have the key, train as they did;
    # Mask2Former's own default is 112 * 112.
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 0
    # Point-sampled mask losses: TRAIN_NUM_POINTS * OVERSAMPLE_RATIO random candidates, of which
    # TRAIN_NUM_POINTS * IMPORTANCE_SAMPLE_RATIO with the most uncertain predictions are kept and
    # the rest drawn uniformly (PointRend's k and beta).
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75
    # transformer decoder
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    # The transformer decoder (TRANSFORMER_DECODER_REGISTRY): MaskFormer's by default, as the
    # official MaskFormer configs leave it unset; Mask2Former's configs name theirs.
    # ("StandardTransformerDecoder" is the same, under Mask2Former's name; Mask2Former's own is
    # "MultiScaleMaskedTransformerDecoder", the official Mask2Former default.)
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "TransformerPredictor"
    # What it reads: a backbone feature name, "transformer_encoder" (TransformerEncoderPixelDecoder's
    # encoder output), "multi_scale_pixel_decoder" (the pixel decoder's multi-scale features) or
    # "pixel_embedding" (the mask features).
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    # inference
    cfg.MODEL.MASK_FORMER.TEST = CN()
    # Which outputs inference returns, in any combination: "sem_seg", "panoptic_seg",
    # "instances" (TEST.DETECTIONS_PER_IMAGE of them).
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    # Images are padded to a multiple of this in the model (ResNet reports 0 on its own).
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32

    # ---- pixel decoder
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    # MSDeformAttnPixelDecoder: the features its deformable-attention encoder reads (the finer
    # IN_FEATURES go through FPN steps instead), and its heads and sampling points per head and
    # level; TRANSFORMER_ENC_LAYERS is its depth.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8

    # ---- Swin Transformer backbone
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    # Activation checkpointing of every Swin block in training: recomputed in the backward pass
    # (same results) instead of stored, for less memory and about a third more backward time.
    cfg.MODEL.SWIN.USE_CHECKPOINT = False
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]

    add_acceleration_config(cfg)


def add_acceleration_config(cfg: CN) -> None:
    """Adds cfg.ACCELERATION: the fast paths `mask_former.engine.accelerate` installs beside the
    eager model. Not official keys. Each applies only to a model on a CUDA device and gives the
    eager path's results up to float32 rounding; on a GPU they are on by default."""
    cfg.ACCELERATION = CN()
    # False: plain eager PyTorch everywhere; the keys below are then ignored.
    cfg.ACCELERATION.ENABLED = True
    # Replay the training forward and backward passes of backbone + head from CUDA graphs,
    # recorded once per batch shape (the training mappers pad batches to one size); matching,
    # losses and the optimizer stay eager around them.
    cfg.ACCELERATION.TRAIN_CUDA_GRAPH = True
    # Replay backbone + head in inference from a CUDA graph recorded once per input shape.
    cfg.ACCELERATION.TEST_CUDA_GRAPH = True
    # Graphs (training and inference, each) are recorded for at most this many input shapes;
    # other shapes run eagerly.
    cfg.ACCELERATION.CUDA_GRAPH_MAX_SHAPES = 2
    # torch.compile backbone + head: fewer kernel launches, after a first step that compiles for
    # a minute or two.
    cfg.ACCELERATION.COMPILE = False
    # The mask losses of all decoder layers as a couple of fused (compiled) kernels.
    cfg.ACCELERATION.FUSED_MASK_LOSSES = True
    # Training batches pinned in a background thread, copied to the GPU without a host wait.
    cfg.ACCELERATION.PINNED_BATCHES = True
    # AdamW's fused CUDA kernel.
    cfg.ACCELERATION.FUSED_OPTIMIZER = True
    # Keys of earlier versions of this project, so that old configs fail with the new name.
    for old, new in (("MODEL.MASK_FORMER.COMPILE", "ACCELERATION.COMPILE"),
                     ("MODEL.MASK_FORMER.TRAIN_CUDA_GRAPH", "ACCELERATION.TRAIN_CUDA_GRAPH"),
                     ("MODEL.MASK_FORMER.TEST.CUDA_GRAPH", "ACCELERATION.TEST_CUDA_GRAPH"),
                     ("MODEL.MASK_FORMER.CUDA_GRAPH_MAX_SHAPES", "ACCELERATION.CUDA_GRAPH_MAX_SHAPES")):
        cfg.register_renamed_key(old, new)
