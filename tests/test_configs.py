"""The shipped configs: they load, name registered datasets, and keep the official recipes' numbers."""
from pathlib import Path

import pytest
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask_former.config import load_config

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIGS_DIR.rglob("*.yaml"))
# Base-*.yaml hold the data and solver half of a recipe; the others are complete models.
MODEL_CONFIGS = [path for path in CONFIG_FILES if not path.name.startswith("Base-")]
MAPPERS = {"mask_former_semantic", "mask_former_panoptic", "detr_panoptic"}


def _id(path: Path) -> str:
    return path.relative_to(CONFIGS_DIR).as_posix()


def load(relative_path) -> CfgNode:
    return load_config(str(CONFIGS_DIR / relative_path))


def test_every_dataset_has_configs():
    expected = [
        "ade20k/maskformer_R50.yaml", "ade20k-full/maskformer_R50.yaml",
        "ade20k-panoptic/maskformer_R50.yaml", "coco-stuff-10k/maskformer_R50.yaml",
        "coco-panoptic/maskformer_R50.yaml", "cityscapes/maskformer_R101.yaml",
        "cityscapes/maskformer_R101c.yaml", "mapillary-vistas/maskformer_R50.yaml",
        "camvid/maskformer_R50.yaml", "camvid/maskformer_swin_tiny.yaml",
    ] + [f"{dataset}/maskformer_swin_{size}.yaml" for dataset in ("ade20k", "coco-panoptic")
         for size in ("tiny", "small", "base", "large")]
    found = {_id(path) for path in MODEL_CONFIGS}
    assert not set(expected) - found


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_id)
def test_config_merges(path):
    cfg = load(path)
    assert cfg.INPUT.DATASET_MAPPER_NAME in MAPPERS


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_id)
def test_no_python_tags(path):
    """Plain YAML: no `!!python/object/apply:eval` (it runs code when loaded, with an unsafe-load warning)."""
    text = path.read_text()
    assert "!!python" not in text
    assert text.lstrip().startswith("#"), "each config starts with a comment naming its recipe"


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=_id)
def test_datasets_registered(path):
    import mask_former.data.datasets  # noqa: F401  (registers this project's datasets)

    cfg = load(path)
    registered = set(DatasetCatalog.list())
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    assert names
    missing = [name for name in names if name not in registered]
    assert not missing, f"not registered: {missing}"
    for name in names:
        meta = MetadataCatalog.get(name)
        classes = meta.get("stuff_classes", None)
        if classes is not None:
            assert len(classes) == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, name
        if cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_semantic":
            ignore_label = meta.get("ignore_label", None)
            if ignore_label is not None:
                assert ignore_label == cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, name


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=_id)
def test_model_config_consistent(path):
    cfg = load(path)
    assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer"
    panoptic_mapper = cfg.INPUT.DATASET_MAPPER_NAME != "mask_former_semantic"
    assert cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON == panoptic_mapper
    if cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE == "transformer_encoder":
        assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME == "TransformerEncoderPixelDecoder"
    if cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer":
        weights = cfg.MODEL.WEIGHTS
        assert weights == "" or weights.startswith("swin_") and weights.endswith(".pkl"), weights
    crop = cfg.INPUT.CROP
    if crop.ENABLED and crop.TYPE == "absolute" and cfg.INPUT.SIZE_DIVISIBILITY > 0:
        # training images are padded to the crop size in the mapper
        assert tuple(crop.SIZE) == (cfg.INPUT.SIZE_DIVISIBILITY,) * 2


def test_ade20k_r50_is_the_official_recipe():
    cfg = load("ade20k/maskformer_R50.yaml")
    assert tuple(cfg.DATASETS.TRAIN) == ("ade20k_sem_seg_train",)
    assert tuple(cfg.DATASETS.TEST) == ("ade20k_sem_seg_val",)
    assert tuple(cfg.INPUT.CROP.SIZE) == (512, 512) and cfg.INPUT.CROP.TYPE == "absolute"
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == [int(x * 0.1 * 512) for x in range(5, 21)]
    assert cfg.INPUT.MIN_SIZE_TEST == 512 and cfg.INPUT.MAX_SIZE_TEST == 2048
    assert cfg.INPUT.COLOR_AUG_SSD
    solver = cfg.SOLVER
    assert solver.IMS_PER_BATCH == 16
    assert solver.MAX_ITER == 160000
    assert solver.OPTIMIZER == "ADAMW"
    assert solver.BASE_LR == pytest.approx(1e-4)
    assert solver.WEIGHT_DECAY == pytest.approx(1e-4)
    assert solver.BACKBONE_MULTIPLIER == pytest.approx(0.1)
    assert solver.CLIP_GRADIENTS.ENABLED
    assert solver.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
    assert solver.CLIP_GRADIENTS.CLIP_VALUE == pytest.approx(0.01)
    assert solver.LR_SCHEDULER_NAME == "WarmupPolyLR"
    assert solver.WARMUP_ITERS == 0
    head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    assert head.NUM_CLASSES == 150 and head.IGNORE_VALUE == 255
    assert (mf.NUM_OBJECT_QUERIES, mf.DEC_LAYERS, mf.HIDDEN_DIM) == (100, 6, 256)
    assert (mf.NO_OBJECT_WEIGHT, mf.DICE_WEIGHT, mf.MASK_WEIGHT) == (0.1, 1.0, 20.0)


# Numbers of the official recipes (facebookresearch/MaskFormer configs), per file.
OFFICIAL = {
    "ade20k/maskformer_swin_tiny.yaml": {
        "MODEL.SWIN.DEPTHS": [2, 2, 6, 2], "MODEL.SWIN.EMBED_DIM": 96,
        "SOLVER.BASE_LR": 6e-5, "SOLVER.WEIGHT_DECAY": 0.01, "SOLVER.WARMUP_ITERS": 1500,
        "SOLVER.BACKBONE_MULTIPLIER": 1.0, "INPUT.CROP.SIZE": [512, 512],
    },
    "ade20k/maskformer_swin_small.yaml": {"MODEL.SWIN.DEPTHS": [2, 2, 18, 2], "MODEL.SWIN.EMBED_DIM": 96},
    "ade20k/maskformer_swin_base.yaml": {
        "MODEL.SWIN.EMBED_DIM": 128, "MODEL.SWIN.NUM_HEADS": [4, 8, 16, 32], "MODEL.SWIN.WINDOW_SIZE": 12,
        "MODEL.SWIN.PRETRAIN_IMG_SIZE": 384, "INPUT.CROP.SIZE": [640, 640], "INPUT.MIN_SIZE_TEST": 640,
        "INPUT.MIN_SIZE_TRAIN": [int(x * 0.1 * 640) for x in range(5, 21)],
    },
    "ade20k/maskformer_swin_large.yaml": {
        "MODEL.SWIN.EMBED_DIM": 192, "MODEL.SWIN.NUM_HEADS": [6, 12, 24, 48], "INPUT.CROP.SIZE": [640, 640],
    },
    "ade20k-full/maskformer_R50.yaml": {
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 847, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 65535,
        "SOLVER.MAX_ITER": 200000, "INPUT.CROP.SIZE": [512, 512],
    },
    "ade20k-panoptic/maskformer_R50.yaml": {
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "TransformerEncoderPixelDecoder",
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 6,
        "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.8,
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.7,
        "SOLVER.MAX_ITER": 720000, "INPUT.CROP.SIZE": [640, 640],
        "INPUT.DATASET_MAPPER_NAME": "mask_former_panoptic",
    },
    "coco-stuff-10k/maskformer_R50.yaml": {
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 171, "SOLVER.IMS_PER_BATCH": 32, "SOLVER.MAX_ITER": 60000,
        "INPUT.CROP.SIZE": [640, 640], "INPUT.MIN_SIZE_TRAIN": [int(x * 0.1 * 640) for x in range(5, 16)],
    },
    "coco-panoptic/maskformer_R50.yaml": {
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 133, "SOLVER.IMS_PER_BATCH": 64, "SOLVER.MAX_ITER": 554400,
        "SOLVER.STEPS": [369600], "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR",
        "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 0, "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.8,
        "INPUT.CROP.TYPE": "absolute_range", "INPUT.CROP.SIZE": [384, 600],
        "INPUT.DATASET_MAPPER_NAME": "detr_panoptic",
    },
    "coco-panoptic/maskformer_swin_tiny.yaml": {
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
        "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5", "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": True,
    },
    "coco-panoptic/maskformer_swin_large.yaml": {"INPUT.MAX_SIZE_TRAIN": 1000},
    "cityscapes/maskformer_R101.yaml": {
        "MODEL.RESNETS.DEPTH": 101, "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 19, "SOLVER.MAX_ITER": 90000,
        "INPUT.CROP.SIZE": [512, 1024], "INPUT.MIN_SIZE_TEST": 1024, "INPUT.SIZE_DIVISIBILITY": -1,
    },
    "cityscapes/maskformer_R101c.yaml": {
        "MODEL.BACKBONE.NAME": "build_resnet_deeplab_backbone", "MODEL.RESNETS.STEM_TYPE": "deeplab",
        "MODEL.RESNETS.STEM_OUT_CHANNELS": 128, "MODEL.RESNETS.RES5_MULTI_GRID": [1, 2, 4],
        "MODEL.WEIGHTS": "detectron2://DeepLab/R-103.pkl",
    },
    "mapillary-vistas/maskformer_R50.yaml": {
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 65, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 65,
        "SOLVER.MAX_ITER": 300000, "INPUT.CROP.SIZE": [1280, 1280], "INPUT.MIN_SIZE_TEST": 2048,
    },
    "camvid/maskformer_R50.yaml": {
        "MODEL.WEIGHTS": "", "MODEL.RESNETS.NORM": "BN", "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 11,
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 11, "SOLVER.IMS_PER_BATCH": 8,
    },
}


def _get(cfg, dotted):
    node = cfg
    for key in dotted.split("."):
        node = node[key]
    return list(node) if isinstance(node, (list, tuple)) else node


@pytest.mark.parametrize("relative_path", sorted(OFFICIAL), ids=str)
def test_official_numbers(relative_path):
    cfg = load(relative_path)
    for key, expected in OFFICIAL[relative_path].items():
        value = _get(cfg, key)
        if isinstance(expected, float):
            assert value == pytest.approx(expected), key
        else:
            assert value == expected, key


@pytest.mark.parametrize(
    "relative_path, millions",
    [("ade20k/maskformer_R50.yaml", 41.3), ("ade20k/maskformer_swin_tiny.yaml", 42.0)],
)
def test_model_builds_on_cpu(relative_path, millions):
    """The paper's sizes: MaskFormer R50 41M parameters, Swin-T 42M."""
    from detectron2.modeling import build_model

    cfg = load(relative_path)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(millions, abs=2.0), f"{count:.2f}M parameters"
