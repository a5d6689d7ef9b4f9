"""A tiny MaskFormer config and a tiny batch, for fast CPU tests; the quick-start model's weights."""
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances

from mask_former import add_mask_former_config
from mask_former.config import load_config

QUICKSTART_CONFIG = Path(__file__).resolve().parents[1] / "configs/quickstart/maskformer_tiny_shapes.yaml"

# Overrides that shrink a full config to the quick-start model's width, for train_net/benchmark runs.
TINY_MODEL_OPTS = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "32", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64", "MODEL.SEM_SEG_HEAD.MASK_DIM", "64",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "64", "MODEL.MASK_FORMER.NHEADS", "4",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "128", "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "16", "MODEL.MASK_FORMER.DROPOUT", "0.0",
]


def tiny_config(num_classes: int = 5):
    """MaskFormer on a narrow ResNet-50 layout with a 2-layer, 32-wide transformer."""
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 32
    cfg.MODEL.MASK_FORMER.NHEADS = 4
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 64
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 2
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.0
    cfg.DATASETS.TRAIN = ()
    return cfg


def tiny_batch(num_classes: int = 5, sizes=((64, 96), (80, 64)), seed: int = 0):
    """Images with horizontal bands of classes; each band is one gt mask."""
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for height, width in sizes:
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
        bands = torch.randperm(num_classes, generator=generator)[:3]
        label = torch.div(torch.arange(height) * 3, height, rounding_mode="floor")
        label_map = bands[label][:, None].expand(height, width)
        instances = Instances((height, width))
        instances.gt_classes = bands
        instances.gt_masks = torch.stack([label_map == c for c in bands])
        batch.append({"image": image, "instances": instances, "height": height, "width": width})
    return batch


def tiny_mask2former_config(num_classes: int = 5):
    """`tiny_config` with Mask2Former's parts: MSDeformAttnPixelDecoder,
    MultiScaleMaskedTransformerDecoder (3 layers + the queries) and point-sampled losses."""
    cfg = tiny_config(num_classes)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 64  # GroupNorm(32) over the decoder's input projections
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 4
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 4
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 256
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 2.0
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 5.0
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 5.0
    return cfg


def save_quickstart_weights(path: Path, *opts: str, seed: int = 0) -> Path:
    """Saves the untrained quick-start model (with config overrides `opts`) at `path`, as
    detectron2 checkpoints hold it ({"model": state dict}); returns `path`."""
    torch.manual_seed(seed)
    model = build_model(load_config(str(QUICKSTART_CONFIG), list(opts)))
    torch.save({"model": model.state_dict()}, path)
    return path
