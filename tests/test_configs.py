"""The shipped configs: they load, name registered datasets, and keep the official recipes' numbers."""
import sys
from pathlib import Path

import pytest
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask_former.config import load_config
from conftest import REPO_ROOT
from mask_former.data import DATASET_MAPPERS

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIGS_DIR.rglob("*.yaml"))
# Base-*.yaml hold the data and solver half of a recipe; the others are complete models.
MODEL_CONFIGS = [path for path in CONFIG_FILES if not path.name.startswith("Base-")]
MAPPERS = {"mask_former_semantic", "mask_former_panoptic", "mask_former_instance", "detr_panoptic",
           "coco_instance_lsj", "coco_panoptic_lsj"}
PANOPTIC_MAPPERS = {"mask_former_panoptic", "detr_panoptic", "coco_panoptic_lsj"}
INSTANCE_MAPPERS = {"mask_former_instance", "coco_instance_lsj"}


def _id(path: Path) -> str:
    return path.relative_to(CONFIGS_DIR).as_posix()


# configs/custom/ take their classes from the dataset folder of DATASETS.CUSTOM_ROOT: a 3-class one.
CUSTOM_ROOT = Path(__file__).resolve().parent / "data" / "custom_root"


def load(relative_path) -> CfgNode:
    path = CONFIGS_DIR / relative_path
    custom = path.parent.name == "custom"
    return load_config(str(path), ["DATASETS.CUSTOM_ROOT", str(CUSTOM_ROOT)] if custom else [])


def test_every_dataset_has_configs():
    expected = [
        "ade20k/maskformer_R50.yaml", "ade20k-full/maskformer_R50.yaml",
        "ade20k-panoptic/maskformer_R50.yaml", "coco-stuff-10k/maskformer_R50.yaml",
        "coco-panoptic/maskformer_R50.yaml", "cityscapes/maskformer_R101.yaml",
        "cityscapes/maskformer_R101c.yaml", "mapillary-vistas/maskformer_R50.yaml",
        "camvid/maskformer_R50.yaml", "camvid/maskformer_swin_tiny.yaml",
    ] + [f"{dataset}/maskformer_swin_{size}.yaml" for dataset in ("ade20k", "coco-panoptic")
         for size in ("tiny", "small", "base", "large")]
    # Mask2Former: the official model zoo's R50 and Swin configs (Swin-B from ImageNet-22k;
    # _IN1k: from ImageNet-1k)
    expected += [
        "ade20k-panoptic/mask2former_R50.yaml", "ade20k-panoptic/mask2former_swin_large.yaml",
        "ade20k-instance/mask2former_R50.yaml",
        "cityscapes/mask2former_R50.yaml", "cityscapes/mask2former_swin_small.yaml",
        "cityscapes/mask2former_swin_large.yaml",
        "cityscapes-panoptic/mask2former_R50.yaml",
        "cityscapes-panoptic/mask2former_swin_tiny.yaml",
        "cityscapes-panoptic/mask2former_swin_base.yaml",
        "cityscapes-instance/mask2former_R50.yaml",
        "cityscapes-instance/mask2former_swin_large.yaml",
        "mapillary-vistas/mask2former_R50.yaml", "mapillary-vistas/mask2former_swin_large.yaml",
        "mapillary-vistas-panoptic/mask2former_R50.yaml",
        "mapillary-vistas-panoptic/mask2former_swin_large.yaml",
        "camvid/mask2former_R50.yaml",
        "custom/maskformer_R50.yaml", "custom/mask2former_R50.yaml",
    ] + [f"{dataset}/mask2former_{model}.yaml"
         for dataset in ("ade20k", "coco-panoptic", "coco-instance")
         for model in ("R50", "swin_tiny", "swin_small", "swin_base", "swin_base_IN1k", "swin_large")]
    found = {_id(path) for path in MODEL_CONFIGS}
    assert sorted(set(expected) - found) == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_id)
def test_config_merges(path):
    cfg = load(path)
    assert cfg.INPUT.DATASET_MAPPER_NAME in MAPPERS


def test_every_mapper_is_known():
    assert set(DATASET_MAPPERS) == MAPPERS


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
    # the classes the mapper's ids index: every class, or the things of an instance dataset
    key = "thing_classes" if cfg.INPUT.DATASET_MAPPER_NAME in INSTANCE_MAPPERS else "stuff_classes"
    for name in names:
        meta = MetadataCatalog.get(name)
        classes = meta.get(key, None)
        if classes is not None:
            assert len(classes) == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, name
        if cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_semantic":
            ignore_label = meta.get("ignore_label", None)
            if ignore_label is not None:
                assert ignore_label == cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, name


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=_id)
def test_test_datasets_are_evaluated(path):
    """Each test dataset has ground truth that the model predicts: mIoU, PQ or mask AP."""
    import mask_former.data.datasets  # noqa: F401  (registers this project's datasets)

    cfg = load(path)
    for name in cfg.DATASETS.TEST:
        assert train_net.evaluation_tasks(cfg, name)


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=_id)
def test_model_config_consistent(path):
    cfg = load(path)
    assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer"
    mapper, test = cfg.INPUT.DATASET_MAPPER_NAME, cfg.MODEL.MASK_FORMER.TEST
    if mapper == "mask_former_semantic":
        assert not test.PANOPTIC_ON and not test.INSTANCE_ON
    if mapper in PANOPTIC_MAPPERS:
        assert test.PANOPTIC_ON
    if mapper in INSTANCE_MAPPERS:
        assert test.INSTANCE_ON
    if cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE == "transformer_encoder":
        assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME == "TransformerEncoderPixelDecoder"
    if cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE == "multi_scale_pixel_decoder":
        assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder"
    # Mask2Former's decoder comes with its point-sampled losses, MaskFormer's with whole masks
    decoder = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    mask2former = decoder == "MultiScaleMaskedTransformerDecoder"
    assert (cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS > 0) == mask2former
    assert path.name.startswith("mask2former_") == mask2former
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


# Numbers of the official Mask2Former recipes (facebookresearch/Mask2Former configs), per file.
M2F_MODEL = {
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "MSDeformAttnPixelDecoder",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 6, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 4,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 256, "MODEL.SEM_SEG_HEAD.MASK_DIM": 256,
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "multi_scale_pixel_decoder",
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 2.0, "MODEL.MASK_FORMER.MASK_WEIGHT": 5.0,
    "MODEL.MASK_FORMER.DICE_WEIGHT": 5.0, "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": 0.1,
    "MODEL.MASK_FORMER.DEC_LAYERS": 10, "MODEL.MASK_FORMER.DROPOUT": 0.0,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100, "MODEL.MASK_FORMER.HIDDEN_DIM": 256,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 2048, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 12544,
    "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0, "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 32,
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/torchvision/R-50.pkl",
    "SOLVER.OPTIMIZER": "ADAMW", "SOLVER.BASE_LR": 1e-4, "SOLVER.WEIGHT_DECAY": 0.05,
    "SOLVER.BACKBONE_MULTIPLIER": 0.1, "SOLVER.AMP.ENABLED": True, "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01,
}
M2F_POLY = dict(M2F_MODEL, **{"SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR", "SOLVER.WARMUP_ITERS": 0,
                              "INPUT.COLOR_AUG_SSD": True, "INPUT.CROP.TYPE": "absolute"})
M2F_LSJ = dict(M2F_MODEL, **{
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR", "SOLVER.STEPS": [327778, 355092],
    "SOLVER.MAX_ITER": 368750, "SOLVER.WARMUP_ITERS": 10, "INPUT.IMAGE_SIZE": 1024,
    "INPUT.MIN_SCALE": 0.1, "INPUT.MAX_SCALE": 2.0, "INPUT.RANDOM_FLIP": "horizontal",
})
M2F_SWIN_L = {"MODEL.SWIN.EMBED_DIM": 192, "MODEL.SWIN.NUM_HEADS": [6, 12, 24, 48],
              "MODEL.SWIN.WINDOW_SIZE": 12, "MODEL.SWIN.PRETRAIN_IMG_SIZE": 384,
              "MODEL.WEIGHTS": "swin_large_patch4_window12_384_22k.pkl"}


def _flags(semantic, instance, panoptic):
    return {"MODEL.MASK_FORMER.TEST.SEMANTIC_ON": semantic,
            "MODEL.MASK_FORMER.TEST.INSTANCE_ON": instance,
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": panoptic}


OFFICIAL.update({
    "ade20k/mask2former_R50.yaml": dict(
        M2F_POLY, **_flags(True, False, False), **{
            "DATASETS.TRAIN": ["ade20k_sem_seg_train"], "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 150,
            "SOLVER.MAX_ITER": 160000, "INPUT.CROP.SIZE": [512, 512],
            "INPUT.SIZE_DIVISIBILITY": 512,
            "INPUT.MIN_SIZE_TRAIN": [int(x * 0.1 * 512) for x in range(5, 21)],
            "INPUT.MIN_SIZE_TEST": 512, "INPUT.MAX_SIZE_TRAIN": 2048,
            "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.8,
            "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.8}),
    "ade20k/mask2former_swin_tiny.yaml": {
        "MODEL.SWIN.DEPTHS": [2, 2, 6, 2], "MODEL.SWIN.EMBED_DIM": 96, "SOLVER.BASE_LR": 1e-4,
        "SOLVER.BACKBONE_MULTIPLIER": 0.1, "SOLVER.WEIGHT_DECAY": 0.05,
        "MODEL.WEIGHTS": "swin_tiny_patch4_window7_224.pkl", "INPUT.CROP.SIZE": [512, 512]},
    "ade20k/mask2former_swin_small.yaml": {
        "MODEL.SWIN.DEPTHS": [2, 2, 18, 2], "MODEL.WEIGHTS": "swin_small_patch4_window7_224.pkl"},
    "ade20k/mask2former_swin_base_IN1k.yaml": {
        "MODEL.SWIN.EMBED_DIM": 128, "MODEL.WEIGHTS": "swin_base_patch4_window12_384.pkl",
        "INPUT.CROP.SIZE": [640, 640], "INPUT.SIZE_DIVISIBILITY": 640, "INPUT.MAX_SIZE_TRAIN": 2560,
        "INPUT.MIN_SIZE_TRAIN": [int(x * 0.1 * 640) for x in range(5, 21)],
        "TEST.AUG.MIN_SIZES": [320, 480, 640, 800, 960, 1120]},
    "ade20k/mask2former_swin_base.yaml": {
        "MODEL.SWIN.EMBED_DIM": 128, "MODEL.WEIGHTS": "swin_base_patch4_window12_384_22k.pkl",
        "INPUT.CROP.SIZE": [640, 640], "INPUT.MIN_SIZE_TEST": 640},
    "ade20k/mask2former_swin_large.yaml": dict(M2F_SWIN_L, **{
        "INPUT.CROP.SIZE": [640, 640], "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100}),
    "ade20k-panoptic/mask2former_R50.yaml": dict(
        M2F_POLY, **_flags(True, True, True), **{
            "DATASETS.TEST": ["ade20k_panoptic_val"], "INPUT.CROP.SIZE": [640, 640],
            "INPUT.DATASET_MAPPER_NAME": "mask_former_panoptic", "SOLVER.MAX_ITER": 160000}),
    "ade20k-panoptic/mask2former_swin_large.yaml": dict(
        M2F_SWIN_L, **{"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 200}),
    "ade20k-instance/mask2former_R50.yaml": dict(
        M2F_POLY, **_flags(True, True, True), **{
            "DATASETS.TRAIN": ["ade20k_instance_train"], "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 100,
            "INPUT.DATASET_MAPPER_NAME": "mask_former_instance", "INPUT.CROP.SIZE": [640, 640]}),
    "coco-panoptic/mask2former_R50.yaml": dict(
        M2F_LSJ, **_flags(True, True, True), **{
            "DATASETS.TRAIN": ["coco_2017_train_panoptic"],
            "DATASETS.TEST": ["coco_2017_val_panoptic_with_sem_seg"],
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 133,
            "INPUT.DATASET_MAPPER_NAME": "coco_panoptic_lsj"}),
    "coco-panoptic/mask2former_swin_large.yaml": dict(M2F_SWIN_L, **{
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 200, "SOLVER.STEPS": [655556, 710184],
        "SOLVER.MAX_ITER": 737500}),
    "coco-instance/mask2former_R50.yaml": dict(
        M2F_LSJ, **_flags(False, True, False), **{
            "DATASETS.TRAIN": ["coco_2017_train"], "DATASETS.TEST": ["coco_2017_val"],
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 80,
            "INPUT.DATASET_MAPPER_NAME": "coco_instance_lsj"}),
    "coco-instance/mask2former_swin_base.yaml": {
        "MODEL.WEIGHTS": "swin_base_patch4_window12_384_22k.pkl", "SOLVER.MAX_ITER": 368750},
    "coco-instance/mask2former_swin_large.yaml": dict(M2F_SWIN_L, **{
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 200, "SOLVER.STEPS": [655556, 710184],
        "SOLVER.MAX_ITER": 737500}),
    "cityscapes/mask2former_R50.yaml": dict(
        M2F_POLY, **_flags(True, False, False), **{
            "MODEL.RESNETS.NORM": "SyncBN", "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 19,
            "SOLVER.MAX_ITER": 90000, "INPUT.CROP.SIZE": [512, 1024], "INPUT.SIZE_DIVISIBILITY": -1,
            "INPUT.MIN_SIZE_TRAIN": [int(x * 0.1 * 1024) for x in range(5, 21)],
            "INPUT.MIN_SIZE_TEST": 1024, "INPUT.MAX_SIZE_TRAIN": 4096,
            "INPUT.MAX_SIZE_TEST": 2048}),
    "cityscapes/mask2former_swin_large.yaml": dict(
        M2F_SWIN_L, **{"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100}),
    "cityscapes-panoptic/mask2former_R50.yaml": dict(
        M2F_POLY, **_flags(True, True, True), **{
            "DATASETS.TRAIN": ["cityscapes_fine_panoptic_train"],
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 19,
            "INPUT.DATASET_MAPPER_NAME": "mask_former_panoptic"}),
    "cityscapes-instance/mask2former_R50.yaml": dict(
        M2F_POLY, **_flags(False, True, False), **{
            "DATASETS.TRAIN": ["cityscapes_fine_instance_seg_train"],
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 8,
            "INPUT.DATASET_MAPPER_NAME": "mask_former_instance"}),
    "cityscapes-instance/mask2former_swin_large.yaml": dict(
        M2F_SWIN_L, **{"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 200}),
    "mapillary-vistas/mask2former_R50.yaml": dict(
        M2F_POLY, **_flags(True, False, False), **{
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 65, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 65,
            "SOLVER.MAX_ITER": 300000, "INPUT.CROP.SIZE": [1024, 1024], "INPUT.MIN_SIZE_TEST": 2048,
            "INPUT.MAX_SIZE_TRAIN": 8192, "DATALOADER.NUM_WORKERS": 10,
            "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0}),
    "mapillary-vistas/mask2former_swin_large.yaml": dict(
        M2F_SWIN_L, **{"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100}),
    "mapillary-vistas-panoptic/mask2former_R50.yaml": dict(
        M2F_POLY, **_flags(True, False, True), **{
            "DATASETS.TEST": ["mapillary_vistas_panoptic_val"],
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 65,
            "INPUT.DATASET_MAPPER_NAME": "mask_former_panoptic",
            "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0}),
    "mapillary-vistas-panoptic/mask2former_swin_large.yaml": dict(
        M2F_SWIN_L, **{"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 200}),
})


def test_camvid_mask2former_trains_as_the_maskformer_recipe():
    """Same data, schedule and solver as camvid/maskformer_R50.yaml: only the model differs."""
    mask2former = load("camvid/mask2former_R50.yaml")
    maskformer = load("camvid/maskformer_R50.yaml")
    for key in ("INPUT", "SOLVER", "DATASETS", "DATALOADER", "MODEL.RESNETS", "MODEL.WEIGHTS"):
        assert _get(mask2former, key) == _get(maskformer, key), key
    assert _get(mask2former, "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME") == "MSDeformAttnPixelDecoder"
    assert mask2former.MODEL.MASK_FORMER.DEC_LAYERS == 10


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
    [("ade20k/maskformer_R50.yaml", 41.3), ("ade20k/maskformer_swin_tiny.yaml", 42.0),
     ("ade20k/mask2former_R50.yaml", 44.0)],
)
def test_model_builds_on_cpu(relative_path, millions):
    """The papers' sizes: MaskFormer R50 41M parameters, Swin-T 42M; Mask2Former R50 44M."""
    from detectron2.modeling import build_model

    from mask_former.modeling import TRANSFORMER_DECODER_REGISTRY

    cfg = load(relative_path)
    decoder = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if decoder not in TRANSFORMER_DECODER_REGISTRY:
        pytest.skip(f"{decoder} is not registered (the Mask2Former modules are another branch's)")
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(millions, abs=2.0), f"{count:.2f}M parameters"
