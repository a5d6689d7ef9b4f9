"""INPUT.GPU_AUGMENTATION (mask_former/data/gpu_augmentation.py) against the CPU mapper.

The device path is plain PyTorch, so it runs here on the CPU: its colour conversions against
OpenCV's, its colour jitter against detectron2's on the same random draws, and the distribution of
whole training samples against MaskFormerSemanticDatasetMapper's (two-sample Kolmogorov-Smirnov
tests on features that resize, crop, colour jitter and flip each move).
"""
import random

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from scipy.stats import ks_2samp

from helpers import registered_dataset, save_png
from mask_former import add_mask_former_config
from mask_former.data.build import build_train_loader
from mask_former.data.dataset_mappers import MaskFormerSemanticDatasetMapper
from mask_former.data.io import DataError
from mask_former.errors import ConfigError
from mask_former.data.gpu_augmentation import (
    GPUAugmentedLoader,
    GPUSemanticAugmentation,
    SemanticDecodeMapper,
    bgr_to_hsv,
    color_aug_ssd,
    hsv_to_bgr,
)

IGNORE = 255
HEIGHT, WIDTH = 96, 128


def _random_image(seed: int, shape=(64, 80, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def test_hsv_conversions_follow_opencv_within_one_level():
    image = _random_image(0)
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    ours = bgr_to_hsv(_chw(image)).permute(1, 2, 0).numpy().astype(int)
    difference = np.abs(ours - hsv.astype(int))
    difference[..., 0] = np.minimum(difference[..., 0], 180 - difference[..., 0])  # hue wraps
    assert difference.max() <= 1 and (difference > 0).mean() < 0.03
    back = hsv_to_bgr(_chw(hsv)).permute(1, 2, 0).numpy().astype(int)
    assert np.abs(back - cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(int)).max() <= 1


@pytest.mark.parametrize("image_format", ["RGB", "BGR"])
def test_colour_jitter_is_detectron2s_on_the_same_draws(image_format):
    aug = ColorAugSSDTransform(img_format=image_format)
    for seed in range(12):
        image = _random_image(seed)
        random.seed(seed)
        expected = aug.apply_image(image.copy()).astype(int)
        ours = color_aug_ssd(_chw(image), random.Random(seed), image_format == "RGB", aug)
        difference = np.abs(ours.permute(1, 2, 0).numpy().astype(int) - expected)
        # A hue level off (rounding at a conversion) moves a saturated pixel by up to ~10; such
        # pixels are rare, and the jitter itself moves the image by 1 to 60 levels on average.
        assert difference.mean() < 0.6, f"seed {seed}"
        assert (difference > 3).mean() < 0.01, f"seed {seed}"


def _write_dataset(root):
    """Four images with gradients (so that resize, crop, flip and colour jitter show in pixel
    statistics) and label maps of three vertical bands with ignored top rows."""
    rows = np.arange(HEIGHT)[:, None]
    cols = np.arange(WIDTH)[None, :]
    dicts = []
    for i in range(4):
        image = np.stack(np.broadcast_arrays(cols * 255 // WIDTH, rows * 255 // HEIGHT,
                                             (cols * 7 + rows * 3 + 40 * i) % 256), -1).astype(np.uint8)
        label = np.select([cols < WIDTH // 3 + 5 * i, cols < 2 * WIDTH // 3], [0, 1], 2)
        label = np.broadcast_to(label, (HEIGHT, WIDTH)).astype(np.uint8).copy()
        label[:10] = IGNORE
        dicts.append({"file_name": save_png(root / f"image{i}.png", image),
                      "sem_seg_file_name": save_png(root / f"label{i}.png", label),
                      "height": HEIGHT, "width": WIDTH})
    return dicts


def _cfg(name: str, max_area: float = 1.0):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = (name,)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (48, 64, 96, 128, 160)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 400
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (64, 64)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = max_area
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.SIZE_DIVISIBILITY = 64
    return cfg


def _features(sample: dict) -> list:
    image = sample["image"].float()
    label = sample["sem_seg"]
    cols = torch.arange(label.shape[1], dtype=torch.float32).expand_as(label)

    def column(c):  # mean column of class c, -1 where absent
        band = label == c
        return cols[band].mean().item() if band.any() else -1.0
    # Class 0 lies left of class 2 unless the sample was flipped.
    flipped = column(0) > column(2) if min(column(0), column(2)) >= 0 else -1
    return [(label == IGNORE).float().mean().item()]  \
        + [(label == c).float().mean().item() for c in range(3)] \
        + image.mean((1, 2)).tolist() + [image.std().item()] \
        + [column(1), float(flipped), len(sample["instances"])]


FEATURES = ["ignored", "class 0", "class 1", "class 2", "mean R", "mean G", "mean B", "std",
            "class-1 column", "flipped", "targets"]


@pytest.mark.parametrize("max_area", [1.0, 0.6], ids=["plain_crop", "area_constrained_crop"])
def test_gpu_augmentation_is_distributed_as_the_cpu_mapper(tmp_path, max_area):
    dicts = _write_dataset(tmp_path)
    samples = 300
    with registered_dataset("gpu_aug_test_train", dicts, ignore_label=IGNORE,
                            stuff_classes=["a", "b", "c"]):
        cfg = _cfg("gpu_aug_test_train", max_area)
        cpu_mapper = MaskFormerSemanticDatasetMapper(cfg, True)
        decode = SemanticDecodeMapper(cfg, True)
        augmentation = GPUSemanticAugmentation(cfg, seed=1)
        np.random.seed(0), random.seed(0)
        cpu = [cpu_mapper(dicts[i % 4]) for i in range(samples)]
        np.random.seed(1)
        ours = augmentation([decode(dicts[i % 4]) for i in range(samples)])
    for a, b in zip(cpu[:4], ours[:4]):
        assert a["image"].dtype == b["image"].dtype == torch.uint8
        assert a["image"].shape == b["image"].shape == (3, 64, 64)
        assert a["sem_seg"].dtype == b["sem_seg"].dtype == torch.int64
        assert b["instances"].gt_masks.dtype == torch.bool
        assert set(a) == set(b)
    for a in ours:  # targets are the label map's classes, ignore excluded
        classes = a["instances"].gt_classes
        assert torch.equal(classes, torch.tensor(sorted(set(a["sem_seg"].unique().tolist()) - {IGNORE})))
        assert torch.equal(a["instances"].gt_masks, a["sem_seg"][None] == classes[:, None, None])
    cpu_features = np.array([_features(s) for s in cpu])
    our_features = np.array([_features(s) for s in ours])
    for k, name in enumerate(FEATURES):
        p_value = ks_2samp(cpu_features[:, k], our_features[:, k]).pvalue
        assert p_value > 1e-3, f"{name}: KS p = {p_value:.2g}"
    # The test can tell: without the colour jitter, or without the flip, a feature differs.
    with registered_dataset("gpu_aug_test_train", dicts, ignore_label=IGNORE,
                            stuff_classes=["a", "b", "c"]):
        for left_out, feature in ((ColorAugSSDTransform, "std"), (T.RandomFlip, "flipped")):
            broken = GPUSemanticAugmentation(cfg, seed=1)
            broken.augmentations = [a for a in broken.augmentations if not isinstance(a, left_out)]
            np.random.seed(1)
            features = np.array([_features(s) for s in
                                 broken([decode(dicts[i % 4]) for i in range(samples)])])
            k = FEATURES.index(feature)
            assert ks_2samp(cpu_features[:, k], features[:, k]).pvalue < 1e-3, left_out.__name__


def _loader_cfg(name: str, batch_size: int):
    """The GPU-augmented training loader's config, read in this process."""
    cfg = _cfg(name)
    cfg.INPUT.GPU_AUGMENTATION = True
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = batch_size
    return cfg


def test_build_train_loader_takes_the_gpu_path(tmp_path):
    dicts = _write_dataset(tmp_path)
    with registered_dataset("gpu_aug_test_train", dicts, ignore_label=IGNORE,
                            stuff_classes=["a", "b", "c"]):
        cfg = _loader_cfg("gpu_aug_test_train", batch_size=2)
        loader = build_train_loader(cfg)
        assert isinstance(loader, GPUAugmentedLoader)
        batch = next(iter(loader))
        assert len(batch) == 2 and batch[0]["image"].shape == (3, 64, 64)
        # The workers read and check entries as the CPU mapper does.
        with pytest.raises(DataError, match="has 'annotations'"):
            SemanticDecodeMapper(cfg, True)(dict(dicts[0], annotations=[]))
        cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_panoptic"
        with pytest.raises(ConfigError, match="INPUT.GPU_AUGMENTATION supports"):
            build_train_loader(cfg)


def _loader_batches(cfg, device: str, count: int = 3):
    cfg = cfg.clone()
    cfg.MODEL.DEVICE = device
    np.random.seed(3)
    loader = iter(build_train_loader(cfg))
    return [next(loader) for _ in range(count)]


@pytest.mark.gpu
def test_the_loader_on_a_gpu_augments_as_on_the_cpu(tmp_path):
    """The same random draws on either device: the same crops and flips (label maps equal), the
    same colours up to resampling rounding; and the batches are complete when the step reads them
    (the augmentation's own stream)."""
    dicts = _write_dataset(tmp_path)
    with registered_dataset("gpu_aug_test_train", dicts, ignore_label=IGNORE,
                            stuff_classes=["a", "b", "c"]):
        cfg = _loader_cfg("gpu_aug_test_train", batch_size=4)
        on_cpu = _loader_batches(cfg, "cpu")
        on_gpu = _loader_batches(cfg, "cuda")
    for cpu_batch, gpu_batch in zip(on_cpu, on_gpu):
        for a, b in zip(cpu_batch, gpu_batch):
            assert b["image"].is_cuda and b["instances"].gt_masks.is_cuda
            assert (a["sem_seg"] == b["sem_seg"].cpu()).float().mean() > 0.99
            assert (a["image"].float() - b["image"].cpu().float()).abs().mean() < 1.0
