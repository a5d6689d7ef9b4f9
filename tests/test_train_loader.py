"""The training loader (mask_former.data.build_train_loader): full batches, of one aspect class
with DATALOADER.ASPECT_RATIO_GROUPING, and every image comes round, with workers or without.
Without grouping, workers send each batch as one block of shared memory
(mask_former.data.packed_batches), with the values the mapper made."""
import io
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import BitMasks, Instances

from helpers import registered_dataset, write_semantic_dataset
from mask_former import add_mask_former_config
from mask_former.data import build_train_loader
from mask_former.data import packed_batches

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
            instances = item["instances"]
            assert instances.gt_masks.shape[-2:] == item["image"].shape[-2:]
            # The packed views hold what the mapper made: one mask per class present.
            assert item["sem_seg"].dtype == torch.int64 and instances.gt_masks.dtype == torch.bool
            assert torch.equal(instances.gt_masks,
                               item["sem_seg"][None] == instances.gt_classes[:, None, None])
            assert torch.equal(instances.gt_classes, item["sem_seg"].unique())
            seen.add(item["file_name"])
        blocks = {_block(t) for item in batch for t in _tensors(item)}
        if workers and not grouping:
            assert len(blocks) == 1  # the batch came as one block
        else:  # single images, or no worker to send them: a storage per tensor, as detectron2's
            assert len(blocks) == 4 * BATCH
        if grouping:
            assert len({item["width"] > item["height"] for item in batch}) == 1
    assert seen == {d["file_name"] for d in dicts}
    if not grouping:  # the test can tell: 16 ungrouped batches of random images mix aspects
        assert any(len({item["width"] > item["height"] for item in batch}) == 2
                   for batch in batches)


def _tensors(item):
    """The four tensors of a semantic dataset dict (gt_masks a tensor or BitMasks)."""
    masks = item["instances"].gt_masks
    return [item["image"], item["sem_seg"], item["instances"].gt_classes,
            getattr(masks, "tensor", masks)]


def _block(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _batch():
    generator = torch.Generator().manual_seed(0)
    batch = []
    for height, width, count in ((5, 7, 2), (6, 4, 0)):
        instances = Instances((height, width))
        instances.gt_classes = torch.arange(count)
        instances.gt_masks = BitMasks(torch.rand(count, height, width, generator=generator) > 0.5)
        batch.append({"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8,
                                             generator=generator),
                      "sem_seg": torch.randint(0, 3, (height, width), generator=generator),
                      "instances": instances, "file_name": f"{height}.png"})
    return batch


def test_a_worker_packs_a_batch_into_one_block_that_pickles_as_one_storage(monkeypatch):
    expected = _batch()
    monkeypatch.setattr(packed_batches.torch.utils.data, "get_worker_info", lambda: object())
    packed = packed_batches.pack_batch(_batch())
    tensors = [t for item in packed for t in _tensors(item)]
    assert len({_block(t) for t in tensors}) == 1
    assert all(t.untyped_storage().is_shared() for t in tensors)
    for got, want in zip(packed, expected):
        for name in ("image", "sem_seg"):
            assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name])
        assert torch.equal(got["instances"].gt_classes, want["instances"].gt_classes)
        assert torch.equal(got["instances"].gt_masks.tensor, want["instances"].gt_masks.tensor)
        assert got["file_name"] == want["file_name"]
    # What the worker sends: one storage for the whole batch.
    reductions = []
    reduce_storage = ForkingPickler._extra_reducers[torch.UntypedStorage]
    pickler = ForkingPickler(io.BytesIO())
    pickler.dispatch_table = dict(pickler.dispatch_table)
    pickler.dispatch_table[torch.UntypedStorage] = \
        lambda storage: reductions.append(1) or reduce_storage(storage)
    pickler.dump(packed)
    assert len(reductions) == 1


def test_outside_a_worker_the_batch_is_left_as_it_is():
    batch = _batch()
    before = [_block(t) for item in batch for t in (item["image"], item["sem_seg"])]
    packed = packed_batches.pack_batch(batch)
    assert [_block(t) for item in packed for t in (item["image"], item["sem_seg"])] == before
