"""The instance and large-scale-jittering mappers: mask_former_instance, coco_instance_lsj and
coco_panoptic_lsj, on crafted annotations (polygons, RLE, arrays, crowds) and the embedded
dataset."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import BoxMode

from mask_former import add_mask_former_config
from mask_former.data import DATASET_MAPPERS
from mask_former.data.dataset_mappers import (
    COCOInstanceLSJDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    MaskFormerInstanceDatasetMapper,
)
from mask_former.data.dataset_mappers.lsj_dataset_mappers import build_lsj_augmentations
from test_dataset_mappers import CRAFTED, panoptic_record, save_png, seed_all

THINGS = "_test_instance_mappers_things"  # 3 thing classes
if THINGS not in MetadataCatalog.list():
    MetadataCatalog.get(THINGS).set(thing_classes=["a", "b", "c"])
HEIGHT, WIDTH = 48, 64


def rle(mask, compressed=True):
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        encoded["counts"] = encoded["counts"].decode("ascii")
        return encoded
    # uncompressed: the run lengths, column-major, starting with background
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def instance_record(tmp_path, image=None):
    """A 48x64 image with a polygon (class 0), a compressed RLE (2), an uncompressed RLE (1), a
    crowd (1, skipped) and an array mask (2); returns the record and the 4 expected masks."""
    polygon = [[4.0, 4.0, 20.0, 4.0, 20.0, 16.0, 4.0, 16.0]]
    expected_polygon = mask_util.decode(mask_util.merge(
        mask_util.frPyObjects(polygon, HEIGHT, WIDTH))).astype(bool)
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    circle = (rows - 30) ** 2 + (cols - 40) ** 2 < 8 ** 2
    band = np.zeros((HEIGHT, WIDTH), bool)
    band[40:46, 2:30] = True
    crowd = np.zeros((HEIGHT, WIDTH), bool)
    crowd[:6, 40:60] = True
    corner = np.zeros((HEIGHT, WIDTH), bool)
    corner[20:30, 50:62] = True
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    annotations = [
        {"segmentation": polygon, "category_id": 0},
        {"segmentation": rle(circle), "category_id": 2},
        {"segmentation": rle(band, compressed=False), "category_id": 1},
        {"segmentation": rle(crowd), "category_id": 1, "iscrowd": 1},
        {"segmentation": corner.astype(np.uint8), "category_id": 2},
    ]
    for annotation in annotations:
        annotation.setdefault("iscrowd", 0)
        annotation.update(bbox=[0, 0, 1, 1], bbox_mode=BoxMode.XYWH_ABS)  # unused
    record = {"file_name": save_png(tmp_path / "instance_image.png", image),
              "height": HEIGHT, "width": WIDTH, "annotations": annotations}
    return record, [expected_polygon, circle, band, corner]


def is_flipped(out, record):
    from PIL import Image

    original = torch.from_numpy(np.asarray(Image.open(record["file_name"])).copy()).permute(2, 0, 1)
    height, width = original.shape[-2:]
    if torch.equal(out["image"][:, :height, :width], original):
        return False
    assert torch.equal(out["image"][:, :height, :width], original.flip(-1))
    return True


def instance_mapper(augmentations, size_divisibility=-1, num_classes=3):
    return MaskFormerInstanceDatasetMapper(augmentations=augmentations, image_format="RGB",
                                           size_divisibility=size_divisibility,
                                           num_classes=num_classes)


def test_mapper_names():
    assert DATASET_MAPPERS["mask_former_instance"] is MaskFormerInstanceDatasetMapper
    assert DATASET_MAPPERS["coco_instance_lsj"] is COCOInstanceLSJDatasetMapper
    assert DATASET_MAPPERS["coco_panoptic_lsj"] is COCOPanopticLSJDatasetMapper


def test_instance_mapper_decodes_polygons_rle_and_arrays(tmp_path):
    """Crowds skipped, annotation order kept, masks flipped with the image, padding False."""
    record, expected = instance_record(tmp_path)
    mapper = instance_mapper([T.RandomFlip()], size_divisibility=32)
    flips = set()
    for seed in range(6):
        seed_all(seed)
        out = mapper(record)
        assert out["image"].shape == (3, 64, 64) and "annotations" not in out
        instances = out["instances"]
        assert instances.image_size == (64, 64)
        assert instances.gt_classes.tolist() == [0, 2, 1, 2]
        assert instances.gt_masks.dtype == torch.bool and instances.gt_masks.shape == (4, 64, 64)
        flipped = is_flipped(out, record)
        flips.add(flipped)
        for mask, want in zip(instances.gt_masks, expected):
            want = torch.from_numpy(want)
            assert torch.equal(mask[:HEIGHT], want.flip(-1) if flipped else want)
        assert not instances.gt_masks[:, HEIGHT:].any()
    assert flips == {False, True}


def test_instance_mapper_resizes_masks_as_segmentations(tmp_path):
    """A 2x resize repeats every mask pixel 2x2 (nearest neighbour)."""
    record, expected = instance_record(tmp_path)
    out = instance_mapper([T.ResizeShortestEdge(96, 1000)])(record)
    assert out["image"].shape == (3, 96, 128)
    for mask, want in zip(out["instances"].gt_masks, expected):
        assert torch.equal(mask, torch.from_numpy(want.repeat(2, 0).repeat(2, 1)))


def test_instance_mapper_keeps_masks_cropped_away(tmp_path):
    """As the official mapper: every non-crowd annotation stays a target, empty or not."""
    record, _ = instance_record(tmp_path)
    out = instance_mapper([T.CropTransform(0, 0, 16, 16)])(record)
    assert out["instances"].gt_masks.shape == (4, 16, 16)
    assert out["instances"].gt_masks.flatten(1).any(1).tolist() == [True, False, False, False]


def test_instance_mapper_from_config():
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.DATASETS.TRAIN = (THINGS,)
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.SIZE_DIVISIBILITY = 640
    mapper = MaskFormerInstanceDatasetMapper(cfg, True)
    assert [type(aug) for aug in mapper.tfm_gens] == [
        T.ResizeShortestEdge, T.RandomCrop, ColorAugSSDTransform, T.RandomFlip]
    assert mapper.num_classes == 3 and mapper.size_divisibility == 640
    with pytest.raises(ValueError, match="MaskFormerInstanceDatasetMapper is for training only"):
        MaskFormerInstanceDatasetMapper(cfg, False)


def test_crowd_only_entry_has_no_targets(tmp_path):
    record, _ = instance_record(tmp_path)
    record["annotations"] = [a for a in record["annotations"] if a["iscrowd"]]
    instances = instance_mapper([])(record)["instances"]
    assert len(instances) == 0 and instances.gt_masks.shape == (0, HEIGHT, WIDTH)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(category_id=3),
     "has category_id 3, outside the contiguous class ids [0, 3)"),
    (lambda a: a.update(segmentation="mask.png"), "is neither polygons (a list), COCO RLE (a dict) "
                                                  "nor a 48x64 array: str"),
    (lambda a: a.update(segmentation=rle(np.zeros((10, 10), bool))),
     "has size [10, 10] but the image is 48x64 (HxW)"),
    (lambda a: a.pop("segmentation"), "has no 'segmentation'; MaskFormer trains on masks"),
])
def test_bad_annotations_name_the_entry(tmp_path, change, message):
    record, _ = instance_record(tmp_path)
    change(record["annotations"][1])
    with pytest.raises(ValueError) as error:
        instance_mapper([])(record)
    assert message in str(error.value)
    assert f"dataset entry of image {record['file_name']!r}" in str(error.value)


def test_entry_without_annotations_is_named(tmp_path):
    record, _ = instance_record(tmp_path)
    del record["annotations"]
    with pytest.raises(ValueError, match=r"no 'annotations' in the dataset entry of image"):
        instance_mapper([])(record)


# ---------------------------------------------------------------- large-scale jitter


def lsj_cfg(dataset=THINGS, image_size=64, min_scale=0.1, max_scale=2.0, flip="horizontal"):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.INPUT.IMAGE_SIZE = image_size
    cfg.INPUT.MIN_SCALE = min_scale
    cfg.INPUT.MAX_SCALE = max_scale
    cfg.INPUT.RANDOM_FLIP = flip
    cfg.INPUT.FORMAT = "RGB"
    return cfg


def test_lsj_augmentations_follow_the_config():
    flip, resize, crop = build_lsj_augmentations(lsj_cfg(image_size=1024))
    assert isinstance(flip, T.RandomFlip) and flip.horizontal and not flip.vertical
    assert isinstance(resize, T.ResizeScale)
    assert (resize.min_scale, resize.max_scale) == (0.1, 2.0)
    assert (resize.target_height, resize.target_width) == (1024, 1024)
    assert isinstance(crop, T.FixedSizeCrop) and crop.crop_size == (1024, 1024) and crop.pad
    assert [type(a) for a in build_lsj_augmentations(lsj_cfg(flip="none"))] == [
        T.ResizeScale, T.FixedSizeCrop]
    with pytest.raises(ValueError, match=r"INPUT.RANDOM_FLIP='sideways'; choose one of"):
        build_lsj_augmentations(lsj_cfg(flip="sideways"))
    with pytest.raises(ValueError, match=r"INPUT.MIN_SCALE=2.0 and INPUT.MAX_SCALE=1.0"):
        build_lsj_augmentations(lsj_cfg(min_scale=2.0, max_scale=1.0))


def test_lsj_instance_mapper_output_size_alignment_and_empty_instances(tmp_path):
    """Every image comes out 64x64; each mask covers its instance's (black) pixels of the yellow
    image and none of the grey padding; instances cropped away are dropped."""
    record, expected = instance_record(tmp_path)
    # no blend of yellow and black is the padding's grey (128, 128, 128)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., :2] = 255
    image[expected[0]] = 0  # the polygon's pixels black
    record, _ = instance_record(tmp_path, image)
    mapper = COCOInstanceLSJDatasetMapper(lsj_cfg(min_scale=0.5, max_scale=2.0), True)
    assert mapper.num_classes == 3
    counts = set()
    for seed in range(12):
        seed_all(seed)
        out = mapper(record)
        assert out["image"].shape == (3, 64, 64)
        instances = out["instances"]
        assert instances.gt_masks.shape[1:] == (64, 64)
        assert instances.gt_masks.flatten(1).any(1).all()  # no empty target
        counts.add(len(instances))
        padding = (out["image"] == 128).all(0)
        assert not (instances.gt_masks & padding).any()
        if len(instances) and instances.gt_classes[0] == 0:  # the polygon survived the crop
            black = (out["image"][:2] < 128).all(0)  # darker than the yellow-black midpoint
            mask = instances.gt_masks[0]
            iou = (mask & black).sum() / (mask | black).sum()
            assert iou > 0.85, f"seed {seed}: mask and image disagree (IoU {iou:.2f})"
    assert len(counts) > 1  # crops do drop instances


def test_lsj_panoptic_mapper_pads_without_segments(tmp_path):
    """Scale 1 on a 48x64 image: no resize, no crop, padded to 64x64; segments as in the PNG."""
    record, ids, _ = panoptic_record(tmp_path, with_semantic=False)
    mapper = COCOPanopticLSJDatasetMapper(lsj_cfg(CRAFTED, min_scale=1.0, max_scale=1.0), True)
    assert mapper.num_classes == 3
    flips = set()
    for seed in range(6):
        seed_all(seed)
        out = mapper(record)
        assert out["image"].shape == (3, 64, 64)
        assert (out["image"][:, 48:] == 128).all()
        flipped = is_flipped(out, record)
        flips.add(flipped)
        instances = out["instances"]
        assert instances.gt_classes.tolist() == [0, 2, 2]  # the crowd skipped
        expected = torch.stack([ids == i for i in (5, 300, 70000)])
        expected = expected.flip(-1) if flipped else expected
        assert torch.equal(instances.gt_masks[:, :48], expected)
        assert not instances.gt_masks[:, 48:].any()
    assert flips == {False, True}


@pytest.mark.parametrize("mapper_name", ["mask_former_instance", "coco_instance_lsj"])
def test_instance_mappers_on_the_embedded_dataset(mapper_name):
    cfg = lsj_cfg("synthetic_shapes_instance_train", image_size=128)
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 128
    mapper = DATASET_MAPPERS[mapper_name](cfg, True)
    assert mapper.num_classes == 3
    for record in DatasetCatalog.get("synthetic_shapes_instance_train")[:4]:
        instances = mapper(record)["instances"]
        assert instances.gt_masks.shape[1:] == (128, 128)
        assert 0 < len(instances) <= len(record["annotations"])
        assert set(instances.gt_classes.tolist()) <= {0, 1, 2}
