"""Datasets with instance ground truth and Mask2Former's panoptic registrations: ADE20K instance,
Mapillary Vistas panoptic, COCO panoptic with semantic label maps, the names Mask2Former's
configs use, and the embedded dataset's instance annotations."""
import json
import os
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import mask_former.data.datasets  # noqa: F401  (registers the datasets)
from mask_former.data import synthetic_shapes
from mask_former.data.datasets import (
    register_ade20k_instance,
    register_ade20k_panoptic,
    register_mapillary_vistas_panoptic,
)
from mask_former.data.datasets.ade20k_categories import ADE20K_INSTANCE_CATEGORIES
from mask_former.data.io import rgb_to_id
from test_datasets import ADE, make_ade20k_panoptic, temporary_names


def test_instance_and_mask2former_dataset_names_are_registered():
    expected = [
        "ade20k_instance_train", "ade20k_instance_val",
        "mapillary_vistas_panoptic_train", "mapillary_vistas_panoptic_val",
        "coco_2017_train_panoptic_with_sem_seg", "coco_2017_val_panoptic_with_sem_seg",
        "synthetic_shapes_instance_train", "synthetic_shapes_instance_val",
        # detectron2's built-ins that Mask2Former's configs use
        "coco_2017_train", "coco_2017_val", "coco_2017_train_panoptic", "coco_2017_val_panoptic",
        "cityscapes_fine_panoptic_train", "cityscapes_fine_panoptic_val",
        "cityscapes_fine_instance_seg_train", "cityscapes_fine_instance_seg_val",
    ]
    registered = set(DatasetCatalog.list())
    assert [name for name in expected if name not in registered] == []


# ---- ADE20K instance

def make_ade20k_instance(root, categories=(7, 12)):
    """ADEChallengeData2016/ade20k_instance_val.json with one image and an instance per category
    (RLE masks, category id = class index, string image ids as prepare_ade20k_panoptic.py)."""
    base = root / ADE
    image_dir = base / "images" / "validation"
    image_dir.mkdir(parents=True, exist_ok=True)
    stem = "ADE_val_00000001"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(image_dir / (stem + ".jpg"))
    annotations = []
    for k, category in enumerate(categories):
        mask = np.zeros((4, 5), np.uint8)
        mask[k, :3] = 1
        segmentation = mask_util.encode(np.asfortranarray(mask))
        segmentation["counts"] = segmentation["counts"].decode("ascii")
        annotations.append({"id": k + 1, "image_id": stem, "category_id": category,
                            "segmentation": segmentation, "area": 3, "bbox": [0, k, 3, 1],
                            "iscrowd": 0})
    json_file = base / "ade20k_instance_val.json"
    json_file.write_text(json.dumps({
        "images": [{"id": stem, "file_name": stem + ".jpg", "height": 4, "width": 5}],
        "annotations": annotations,
        "categories": [{"id": c, "name": n} for n, c in ADE20K_INSTANCE_CATEGORIES]}))
    return base


def test_ade20k_instance_loads_with_contiguous_ids(tmp_path):
    base = make_ade20k_instance(tmp_path)
    name = f"test_ade20k_instance_{uuid.uuid4().hex}"
    with temporary_names(name):
        register_ade20k_instance.register_ade20k_instance_split(name, "val", str(tmp_path))
        metadata = MetadataCatalog.get(name)
        assert metadata.evaluator_type == "coco"
        assert len(metadata.thing_classes) == 100
        assert metadata.thing_classes[:3] == ["bed", "windowpane", "cabinet"]
        assert metadata.thing_dataset_id_to_contiguous_id[7] == 0
        assert metadata.thing_dataset_id_to_contiguous_id[12] == 3  # person, the 4th category
        assert metadata.thing_dataset_id_to_contiguous_id[149] == 99
        (record,) = DatasetCatalog.get(name)
        assert record["file_name"] == str(base / "images" / "validation" / "ADE_val_00000001.jpg")
        assert (record["height"], record["width"]) == (4, 5)
        assert [a["category_id"] for a in record["annotations"]] == [0, 3]
        assert record["annotations"][1]["segmentation"]["size"] == [4, 5]
        assert metadata.json_file == str(base / "ade20k_instance_val.json")


def test_ade20k_instance_unknown_category_names_the_json(tmp_path):
    base = make_ade20k_instance(tmp_path, categories=(7, 0))  # 0, "wall", is stuff
    name = f"test_ade20k_instance_{uuid.uuid4().hex}"
    with temporary_names(name):
        register_ade20k_instance.register_ade20k_instance_split(name, "val", str(tmp_path))
        with pytest.raises(ValueError) as error:
            DatasetCatalog.get(name)
    assert str(error.value) == (
        f"{base / 'ade20k_instance_val.json'}: an annotation of image "
        f"{str(base / 'images' / 'validation' / 'ADE_val_00000001.jpg')!r} has category_id 0, "
        "not one of the 100 ADE20K instance categories (ids = ADE20K-150 class indices)")


def test_ade20k_instance_missing_json_names_the_path(tmp_path):
    name = f"test_ade20k_instance_{uuid.uuid4().hex}"
    with temporary_names(name):
        register_ade20k_instance.register_ade20k_instance_split(name, "val", str(tmp_path))
        with pytest.raises(FileNotFoundError, match="ade20k_instance_val.json"):
            DatasetCatalog.get(name)


def test_ade20k_panoptic_has_the_instance_json_for_mask_ap(tmp_path):
    base = make_ade20k_panoptic(tmp_path)
    name = f"test_ade20k_panoptic_{uuid.uuid4().hex}"
    with temporary_names(name):
        register_ade20k_panoptic.register_ade20k_panoptic_split(name, "val", str(tmp_path))
        DatasetCatalog.get(name)
        assert MetadataCatalog.get(name).json_file == str(base / "ade20k_instance_val.json")


# ---- Mapillary Vistas panoptic

MAPILLARY_LABELS = [
    {"name": "animal--bird", "readable": "Bird", "color": [165, 42, 42], "instances": True,
     "evaluate": True},
    {"name": "nature--sky", "readable": "Sky", "color": [70, 130, 180], "instances": False,
     "evaluate": True},
    {"name": "object--vehicle--car", "readable": "Car", "color": [0, 0, 142], "instances": True,
     "evaluate": True},
    {"name": "void--unlabeled", "readable": "Unlabeled", "color": [0, 0, 0], "instances": False,
     "evaluate": False},
]


def make_mapillary_panoptic(root, category_ids=(2, 3)):
    """mapillary_vistas/ with config.json and a one-image validation split."""
    base = root / "mapillary_vistas"
    split = base / "validation"
    for folder in ("images", "panoptic", "labels"):
        (split / folder).mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"labels": MAPILLARY_LABELS}))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(split / "images" / "a.jpg")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(split / "panoptic" / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(split / "labels" / "a.png")
    segments = [{"id": k + 1, "category_id": c, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]}
                for k, c in enumerate(category_ids)]
    (split / "panoptic" / "panoptic_2018.json").write_text(json.dumps({
        "annotations": [{"image_id": "a", "file_name": "a.png", "segments_info": segments}],
        "categories": []}))
    return split


def test_mapillary_panoptic_loads_with_classes_from_config_json(tmp_path):
    split = make_mapillary_panoptic(tmp_path)
    name = f"test_mapillary_panoptic_{uuid.uuid4().hex}"
    with temporary_names(name):
        register_mapillary_vistas_panoptic.register_mapillary_vistas_panoptic_split(
            name, "val", str(tmp_path))
        metadata = MetadataCatalog.get(name)
        assert metadata.stuff_classes == ["Bird", "Sky", "Car"]
        assert metadata.thing_classes == ["Bird", "Sky", "Car"]
        assert metadata.stuff_colors == [[165, 42, 42], [70, 130, 180], [0, 0, 142]]
        assert metadata.thing_dataset_id_to_contiguous_id == {1: 0, 3: 2}
        assert metadata.stuff_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
        assert metadata.ignore_label == 65
        assert metadata.evaluator_type == "mapillary_vistas_panoptic_seg"
        (record,) = DatasetCatalog.get(name)
        assert record["file_name"] == str(split / "images" / "a.jpg")
        assert record["pan_seg_file_name"] == str(split / "panoptic" / "a.png")
        assert record["sem_seg_file_name"] == str(split / "labels" / "a.png")
        assert [(s["category_id"], s["isthing"]) for s in record["segments_info"]] == [
            (1, False), (2, True)]
        assert metadata.panoptic_json == str(split / "panoptic" / "panoptic_2018.json")


def test_mapillary_panoptic_unknown_category_names_the_json(tmp_path):
    split = make_mapillary_panoptic(tmp_path, category_ids=(2, 66))
    name = f"test_mapillary_panoptic_{uuid.uuid4().hex}"
    with temporary_names(name):
        register_mapillary_vistas_panoptic.register_mapillary_vistas_panoptic_split(
            name, "val", str(tmp_path))
        with pytest.raises(ValueError) as error:
            DatasetCatalog.get(name)
    assert str(error.value) == (
        f"{split / 'panoptic' / 'panoptic_2018.json'}: a segment of 'a.png' has category_id 66, "
        f"not one of the 3 classes of {tmp_path / 'mapillary_vistas' / 'config.json'}")


# ---- COCO panoptic with semantic label maps

def test_coco_panoptic_with_sem_seg_metadata():
    metadata = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    builtin = MetadataCatalog.get("coco_2017_val_panoptic")
    for key in ("image_root", "panoptic_root", "panoptic_json", "json_file",
                "thing_dataset_id_to_contiguous_id", "stuff_classes"):
        assert metadata.get(key) == builtin.get(key), key
    assert metadata.json_file.endswith("instances_val2017.json")
    assert metadata.sem_seg_root == os.path.join(os.path.dirname(builtin.panoptic_root),
                                                 "panoptic_semseg_val2017")
    stuff = metadata.stuff_dataset_id_to_contiguous_id
    assert sorted(stuff.values()) == list(range(133))  # every class, for the semantic evaluator
    assert all(stuff[d] == c for d, c in metadata.thing_dataset_id_to_contiguous_id.items())
    assert metadata.evaluator_type == "coco_panoptic_seg_with_sem_seg"


# ---- the embedded dataset's instances

def test_synthetic_instances_are_the_thing_segments():
    """instances.json: one instance per thing segment, its RLE the segment's pixels."""
    record = DatasetCatalog.get("synthetic_shapes_panoptic_val")[3]
    with open(synthetic_shapes.instances_json(synthetic_shapes.default_root(), "val")) as f:
        coco = json.load(f)
    assert coco["categories"] == [{"id": 2, "name": "circle"}, {"id": 3, "name": "square"},
                                  {"id": 4, "name": "triangle"}]
    annotations = [a for a in coco["annotations"] if a["image_id"] == record["image_id"]]
    things = [s for s in record["segments_info"] if s["isthing"]]
    assert [a["category_id"] for a in annotations] == [s["category_id"] for s in things]
    ids = rgb_to_id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
    for annotation, segment in zip(annotations, things):
        mask = mask_util.decode(annotation["segmentation"]).astype(bool)
        assert np.array_equal(mask, ids == segment["id"])
        assert annotation["area"] == segment["area"] == mask.sum()
        rows, cols = np.nonzero(mask)
        assert annotation["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1,
                                      rows.max() - rows.min() + 1]
        assert annotation["iscrowd"] == 0
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])


def test_synthetic_instance_split():
    panoptic = DatasetCatalog.get("synthetic_shapes_panoptic_val")
    instance = DatasetCatalog.get("synthetic_shapes_instance_val")
    assert [r["file_name"] for r in instance] == [r["file_name"] for r in panoptic]
    for inst, pan in zip(instance[:10], panoptic[:10]):
        assert "sem_seg_file_name" not in inst and "pan_seg_file_name" not in inst
        things = [s["category_id"] - 2 for s in pan["segments_info"] if s["isthing"]]
        assert [a["category_id"] for a in inst["annotations"]] == things
    metadata = MetadataCatalog.get("synthetic_shapes_instance_val")
    assert metadata.thing_classes == ["circle", "square", "triangle"]
    assert metadata.thing_dataset_id_to_contiguous_id == {2: 0, 3: 1, 4: 2}
    assert metadata.evaluator_type == "coco"
    assert MetadataCatalog.get("synthetic_shapes_panoptic_val").json_file == (
        synthetic_shapes.instances_json(synthetic_shapes.default_root(), "val"))
