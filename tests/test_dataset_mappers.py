"""MaskFormer's dataset mappers: targets on real CamVid frames and crafted panoptic files, and the
errors that bad annotation files get."""
import random
import re

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from PIL import Image

from conftest import shared_path
from mask_former import add_mask_former_config
from mask_former.data.dataset_mappers import (
    DETRPanopticDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)

CAMVID = "_test_dataset_mappers_camvid"
CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist"]
CAMVID_VOID = 11
CAMVID_FILES = [("train", "0001TP_006690"), ("train", "0001TP_006720"), ("val", "0016E5_07959")]
# crafted files: 3 classes, void 255
CRAFTED = "_test_dataset_mappers_crafted"
CRAFTED_VOID = 255

for _name, _classes, _void in ((CAMVID, CAMVID_CLASSES, CAMVID_VOID),
                               (CRAFTED, ["a", "b", "c"], CRAFTED_VOID)):
    if _name not in MetadataCatalog.list():
        MetadataCatalog.get(_name).set(stuff_classes=_classes, ignore_label=_void)


def make_cfg(dataset=CAMVID, min_size=(360,), crop=None, max_area=1.0, size_divisibility=-1,
             color_aug=False):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.INPUT.MIN_SIZE_TRAIN = min_size
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 2048
    cfg.INPUT.CROP.ENABLED = crop is not None
    if crop is not None:
        cfg.INPUT.CROP.TYPE = "absolute"
        cfg.INPUT.CROP.SIZE = crop
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = max_area
    cfg.INPUT.SIZE_DIVISIBILITY = size_divisibility
    cfg.INPUT.COLOR_AUG_SSD = color_aug
    return cfg


def seed_all(seed):
    # detectron2's augmentations draw from numpy, ColorAugSSDTransform from `random`
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(scope="module")
def camvid_dicts():
    root = shared_path("camvid")
    return [
        {"file_name": str(root / "images" / split / f"{name}.jpg"),
         "sem_seg_file_name": str(root / "labels" / split / f"{name}.png"),
         "height": 360, "width": 480}
        for split, name in CAMVID_FILES
    ]


def check_semantic_targets(out, ignore_label):
    """One mask per class present, equal to sem_seg == class; masks cover the non-void pixels."""
    sem_seg, instances = out["sem_seg"], out["instances"]
    image = out["image"]
    assert image.dtype == torch.uint8 and image.shape == (3, *sem_seg.shape)
    assert sem_seg.dtype == torch.int64
    assert instances.image_size == tuple(sem_seg.shape)
    classes, masks = instances.gt_classes, instances.gt_masks
    assert classes.dtype == torch.int64 and masks.dtype == torch.bool
    assert masks.shape == (len(classes), *sem_seg.shape)
    present = torch.unique(sem_seg)
    assert torch.equal(classes, present[present != ignore_label])  # unique, increasing
    for class_id, mask in zip(classes, masks):
        assert torch.equal(mask, sem_seg == class_id)
    assert torch.equal(masks.any(0), sem_seg != ignore_label)


def read_label(path):
    return np.asarray(Image.open(path)).astype(np.int64)


# ---------------------------------------------------------------- semantic mapper on CamVid


def test_semantic_pads_and_aligns_labels(camvid_dicts):
    """Short side kept at 360: labels equal the file's (maybe flipped), padding is void."""
    mapper = MaskFormerSemanticDatasetMapper(make_cfg(size_divisibility=32), True)
    seed_all(0)
    for record in camvid_dicts:
        out = mapper(record)
        check_semantic_targets(out, CAMVID_VOID)
        assert out["sem_seg"].shape == (384, 480)  # 360 padded to a multiple of 32
        label = torch.from_numpy(read_label(record["sem_seg_file_name"]))
        top = out["sem_seg"][:360]
        assert torch.equal(top, label) or torch.equal(top, label.flip(-1))
        assert (out["sem_seg"][360:] == CAMVID_VOID).all()
        assert not out["instances"].gt_masks[:, 360:].any()
        assert (out["image"][:, 360:] == 128).all()
        assert "sem_seg_file_name" not in out and out["file_name"] == record["file_name"]
    assert "image" not in camvid_dicts[0]  # the caller's dict is untouched


@pytest.mark.parametrize("min_size", [(288, 320), (432,)])
def test_semantic_resize_crop_color(camvid_dicts, min_size):
    cfg = make_cfg(min_size=min_size, crop=[250, 300], max_area=0.9, size_divisibility=32,
                   color_aug=True)
    mapper = MaskFormerSemanticDatasetMapper(cfg, True)
    seed_all(1)
    for record in camvid_dicts:
        out = mapper(record)
        check_semantic_targets(out, CAMVID_VOID)
        assert out["sem_seg"].shape == (256, 320)
        assert (out["sem_seg"][250:] == CAMVID_VOID).all()
        assert (out["sem_seg"][:, 300:] == CAMVID_VOID).all()


def test_semantic_from_config_follows_official(camvid_dicts):
    mapper = MaskFormerSemanticDatasetMapper(
        make_cfg(crop=[256, 256], max_area=0.5, color_aug=True, size_divisibility=64), True)
    resize, crop, color, flip = mapper.tfm_gens
    assert isinstance(resize, T.ResizeShortestEdge) and isinstance(flip, T.RandomFlip)
    assert isinstance(crop, T.RandomCrop_CategoryAreaConstraint)
    assert crop.single_category_max_area == 0.5 and crop.ignored_category == CAMVID_VOID
    assert isinstance(color, ColorAugSSDTransform) and not color.is_rgb  # cfg.INPUT.FORMAT: BGR
    assert (mapper.ignore_label, mapper.num_classes, mapper.size_divisibility) == (11, 11, 64)
    with pytest.raises(ValueError, match="training only"):
        MaskFormerSemanticDatasetMapper(make_cfg(), False)


def test_semantic_is_deterministic_under_a_seed(camvid_dicts):
    mapper = MaskFormerSemanticDatasetMapper(
        make_cfg(min_size=(300, 360, 420), crop=[200, 200], max_area=0.75, color_aug=True), True)
    outputs = []
    for seed in (7, 7, 8):
        seed_all(seed)
        outputs.append(mapper(camvid_dicts[0]))
    first, again, other = outputs
    for key in ("image", "sem_seg"):
        assert torch.equal(first[key], again[key])
    assert torch.equal(first["instances"].gt_masks, again["instances"].gt_masks)
    assert not torch.equal(first["image"], other["image"])


# ---------------------------------------------------------------- crafted files


def save_png(path, array):
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return str(path)


def crafted_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def semantic_record(tmp_path, label, image=None, name="x"):
    image = crafted_image(*label.shape) if image is None else image
    return {"file_name": save_png(tmp_path / f"{name}.png", image),
            "sem_seg_file_name": save_png(tmp_path / f"{name}_label.png", label),
            "height": image.shape[0], "width": image.shape[1]}


def test_category_area_constraint_is_respected(tmp_path):
    """Two classes split at the middle column: a crop of half the width is mostly one class unless
    it straddles the border; the constraint keeps each class under 75% of the crop."""
    label = np.zeros((64, 64), np.uint8)
    label[:, 32:] = 1
    label[:4] = CRAFTED_VOID  # void does not count towards the areas
    record = semantic_record(tmp_path, label)

    def largest_fractions(max_area):
        mapper = MaskFormerSemanticDatasetMapper(
            make_cfg(CRAFTED, min_size=(64,), crop=[32, 32], max_area=max_area), True)
        fractions = []
        for seed in range(20):
            seed_all(seed)
            out = mapper(record)
            check_semantic_targets(out, CRAFTED_VOID)
            sem_seg = out["sem_seg"]
            counts = torch.bincount(sem_seg[sem_seg != CRAFTED_VOID], minlength=2)
            fractions.append((counts.max() / counts.sum()).item())
        return fractions

    assert max(largest_fractions(1.0)) > 0.75  # unconstrained crops do break the bound
    assert max(largest_fractions(0.75)) < 0.75


def pan_color(segment_id):
    return [segment_id % 256, segment_id // 256 % 256, segment_id // 65536]


# segment ids chosen to use all three channels of the RGB encoding
STUFF_ID, THING_A_ID, THING_B_ID, CROWD_ID = 5, 300, 70000, 1 + 256 * 7 + 65536 * 2


def panoptic_record(tmp_path, with_semantic=True):
    """48x64 image: stuff (class 0) on top, two things of class 2, a crowd of class 1, void."""
    ids = np.full((48, 64), STUFF_ID, np.int64)
    ids[24:, :] = 0  # void
    ids[28:40, 4:20] = THING_A_ID
    ids[30:46, 30:40] = THING_B_ID
    ids[26:34, 44:60] = CROWD_ID
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    semantic = np.full(ids.shape, CRAFTED_VOID, np.uint8)
    semantic[ids == STUFF_ID] = 0
    semantic[(ids == THING_A_ID) | (ids == THING_B_ID)] = 2
    semantic[ids == CROWD_ID] = 1
    record = {
        "file_name": save_png(tmp_path / "pan_image.png", crafted_image(48, 64)),
        "pan_seg_file_name": save_png(tmp_path / "pan.png", rgb),
        "height": 48, "width": 64,
        "segments_info": [
            {"id": STUFF_ID, "category_id": 0, "iscrowd": 0},
            {"id": CROWD_ID, "category_id": 1, "iscrowd": 1},
            {"id": THING_A_ID, "category_id": 2, "iscrowd": 0},
            {"id": THING_B_ID, "category_id": 2, "iscrowd": 0},
        ],
    }
    if with_semantic:
        record["sem_seg_file_name"] = save_png(tmp_path / "pan_semantic.png", semantic)
    return record, torch.from_numpy(ids), torch.from_numpy(semantic.astype(np.int64))


def check_panoptic_targets(out, ids):
    """Non-crowd segments in segments_info order; masks are the segments' pixels in `ids`."""
    instances = out["instances"]
    assert instances.gt_classes.tolist() == [0, 2, 2]
    assert instances.gt_masks.dtype == torch.bool
    height, width = ids.shape
    expected = torch.stack([ids == i for i in (STUFF_ID, THING_A_ID, THING_B_ID)])
    assert torch.equal(instances.gt_masks[:, :height, :width], expected)
    assert not instances.gt_masks[:, height:].any() and not instances.gt_masks[:, :, width:].any()


@pytest.mark.parametrize("with_semantic", [True, False])
def test_panoptic_mapper_targets(tmp_path, with_semantic):
    record, ids, semantic = panoptic_record(tmp_path, with_semantic)
    mapper = MaskFormerPanopticDatasetMapper(make_cfg(CRAFTED, min_size=(48,),
                                                      size_divisibility=32), True)
    seen_flips = set()
    for seed in range(6):
        seed_all(seed)
        out = mapper(record)
        assert out["image"].shape == (3, 64, 64)
        flipped = not torch.equal(out["image"][:, :48], torch.from_numpy(
            np.asarray(Image.open(record["file_name"]))[..., ::-1].copy()).permute(2, 0, 1))
        seen_flips.add(flipped)
        check_panoptic_targets(out, ids.flip(-1) if flipped else ids)
        assert ("sem_seg" in out) == with_semantic
        if with_semantic:
            expected = semantic.flip(-1) if flipped else semantic
            assert torch.equal(out["sem_seg"][:48], expected)
            assert (out["sem_seg"][48:] == CRAFTED_VOID).all()
    assert seen_flips == {False, True}


def test_panoptic_crop_without_semantic_map(tmp_path):
    """The category-area crop takes its classes from the segments when there is no label map."""
    record, _, _ = panoptic_record(tmp_path, with_semantic=False)
    mapper = MaskFormerPanopticDatasetMapper(
        make_cfg(CRAFTED, min_size=(48,), crop=[24, 24], max_area=0.9), True)
    for seed in range(5):
        seed_all(seed)
        out = mapper(record)
        assert out["image"].shape == (3, 24, 24)
        assert out["instances"].gt_masks.shape == (3, 24, 24)
        assert out["instances"].gt_masks.sum(0).max() <= 1  # segments do not overlap


def test_detr_panoptic_mapper(tmp_path):
    record, ids, _ = panoptic_record(tmp_path)
    mapper = DETRPanopticDatasetMapper(crop_gen=None, tfm_gens=[T.ResizeShortestEdge(48)],
                                       image_format="RGB")
    out = mapper(record)
    assert out["image"].shape == (3, 48, 64)
    assert not out["instances"].has("gt_boxes")  # masks only, as the official mapper
    check_panoptic_targets(out, ids)

    cfg = make_cfg(CRAFTED, min_size=(96,), crop=[300, 300])
    mapper = DETRPanopticDatasetMapper(cfg, True)
    assert mapper.num_classes == 3 and isinstance(mapper.tfm_gens[0], T.RandomFlip)
    shapes = set()
    for seed in range(8):
        seed_all(seed)
        out = mapper(record)
        shapes.add(tuple(out["image"].shape))
        masks = out["instances"].gt_masks
        assert masks.shape[1:] == out["image"].shape[1:]
        assert masks.sum(0).max() <= 1
        assert out["instances"].gt_classes.tolist() == [0, 2, 2]
    assert shapes == {(3, 96, 128), (3, 96, 96)}  # both branches, with and without crop

    test_mapper = DETRPanopticDatasetMapper(cfg, False)
    out = test_mapper(record)
    assert "instances" not in out and out["image"].dtype == torch.uint8


# ---------------------------------------------------------------- bad files


MAPPERS = ["semantic", "panoptic", "detr"]


def build_mapper(kind):
    if kind == "detr":
        return DETRPanopticDatasetMapper(crop_gen=None, tfm_gens=[T.ResizeShortestEdge(48)],
                                         image_format="RGB", num_classes=3)
    cls = MaskFormerSemanticDatasetMapper if kind == "semantic" else MaskFormerPanopticDatasetMapper
    return cls(augmentations=[T.RandomFlip()], image_format="RGB", ignore_label=CRAFTED_VOID,
               size_divisibility=32, num_classes=3)


def good_record(tmp_path, kind):
    if kind == "semantic":
        label = np.zeros((48, 64), np.uint8)
        label[10:20] = 2
        return semantic_record(tmp_path, label), "sem_seg_file_name"
    return panoptic_record(tmp_path, with_semantic=False)[0], "pan_seg_file_name"


@pytest.mark.parametrize("kind", MAPPERS)
def test_good_records_map(tmp_path, kind):
    record, _ = good_record(tmp_path, kind)
    assert len(build_mapper(kind)(record)["instances"]) > 0


@pytest.mark.parametrize("kind", MAPPERS)
@pytest.mark.parametrize("which", ["file_name", "label"])
def test_missing_file_is_named(tmp_path, kind, which):
    record, label_key = good_record(tmp_path, kind)
    key = label_key if which == "label" else which
    record[key] = str(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gone.png"))) as error:
        build_mapper(kind)(record)
    assert record["file_name"] in str(error.value)


@pytest.mark.parametrize("kind", MAPPERS)
@pytest.mark.parametrize("which", ["file_name", "label"])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_is_named(tmp_path, kind, which, damage):
    record, label_key = good_record(tmp_path, kind)
    path = record[label_key if which == "label" else which]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(200) if damage == "garbage"
                else data[:len(data) // 2])
    with pytest.raises(ValueError, match="cannot read .*" + re.escape(path)) as error:
        build_mapper(kind)(record)
    assert record["file_name"] in str(error.value)  # a label file's error names its image too


@pytest.mark.parametrize("kind", MAPPERS)
def test_size_mismatch_names_both_files(tmp_path, kind):
    record, label_key = good_record(tmp_path, kind)
    save_png(record["file_name"], crafted_image(40, 64))
    record["height"] = 40
    with pytest.raises(ValueError) as error:
        build_mapper(kind)(record)
    message = str(error.value)
    for part in (record[label_key], record["file_name"], "64x48", "64x40"):
        assert part in message


def test_out_of_range_label_is_named(tmp_path):
    label = np.zeros((48, 64), np.uint8)
    label[5, 5], label[6, 6], label[7, 7] = 3, 200, CRAFTED_VOID  # 3 classes, void 255
    record = semantic_record(tmp_path, label)
    match = re.escape(record["sem_seg_file_name"]) + r".*\[3, 200\]"
    with pytest.raises(ValueError, match=match):
        build_mapper("semantic")(record)


def test_out_of_range_camvid_label_is_named(camvid_dicts):
    """CamVid's void id 11 is out of range where the metadata declares 255 as ignore label."""
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[], image_format="BGR", ignore_label=255, size_divisibility=-1,
        num_classes=11)
    match = re.escape(camvid_dicts[0]["sem_seg_file_name"]) + r".*\[11\]"
    with pytest.raises(ValueError, match=match):
        mapper(camvid_dicts[0])


@pytest.mark.parametrize("kind", ["panoptic", "detr"])
def test_out_of_range_category_is_named(tmp_path, kind):
    record, _ = good_record(tmp_path, kind)
    record["segments_info"][2]["category_id"] = 7
    with pytest.raises(ValueError, match=re.escape(record["pan_seg_file_name"]) + r".*\[7\]"):
        build_mapper(kind)(record)


def test_colour_label_map_is_rejected(tmp_path):
    record = semantic_record(tmp_path, np.zeros((48, 64, 3), np.uint8))
    match = re.escape(record["sem_seg_file_name"]) + ".*single-channel"
    with pytest.raises(ValueError, match=match):
        build_mapper("semantic")(record)
