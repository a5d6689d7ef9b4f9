"""The training loader (mask_former.data.build_train_loader): full batches, of one aspect class
with DATALOADER.ASPECT_RATIO_GROUPING, and every image comes round, with workers or without."""
import numpy as np
import pytest
from detectron2.config import get_cfg

from helpers import registered_dataset, write_semantic_dataset
from mask_former import add_mask_former_config
from mask_former.data import build_train_loader

BATCH = 3


def _labels():
    """7 landscape (48x64) and 5 portrait (64x48) label maps of classes 0-2."""
    rng = np.random.default_rng(0)
    shapes = [(48, 64)] * 7 + [(64, 48)] * 5
    return [rng.integers(0, 3, shape).astype(np.uint8) for shape in shapes]


def _cfg(name: str, workers: int, grouping: bool):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = (name,)
    cfg.INPUT.MIN_SIZE_TRAIN = (48,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.CROP.ENABLED = False
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.SIZE_DIVISIBILITY = 0
    cfg.SOLVER.IMS_PER_BATCH = BATCH
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = grouping
    return cfg


@pytest.mark.parametrize("workers, grouping", [(2, True), (0, True), (2, False)],
                         ids=["grouped_workers", "grouped_no_workers", "not_grouped"])
def test_batches_are_full_and_grouped_by_aspect_and_every_image_comes_round(tmp_path, workers,
                                                                           grouping):
    dicts = write_semantic_dataset(tmp_path, _labels())
    with registered_dataset("loader_test_train", dicts, ignore_label=255,
                            stuff_classes=["a", "b", "c"]):
        loader = build_train_loader(_cfg("loader_test_train", workers, grouping))
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == 16:
                break
    seen = set()
    for batch in batches:
        assert len(batch) == BATCH
        for item in batch:
            assert item["image"].shape[-2:] == (item["height"], item["width"])
            assert item["instances"].gt_masks.shape[-2:] == item["image"].shape[-2:]
            seen.add(item["file_name"])
        if grouping:
            assert len({item["width"] > item["height"] for item in batch}) == 1
    assert seen == {d["file_name"] for d in dicts}
    if not grouping:  # the test can tell: 16 ungrouped batches of random images mix aspects
        assert any(len({item["width"] > item["height"] for item in batch}) == 2
                   for batch in batches)
