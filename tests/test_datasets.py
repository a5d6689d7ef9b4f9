"""Dataset registration (mask_former.data.datasets) and datasets/prepare_ade20k.py."""
import contextlib
import json
import logging
import os
import uuid

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES
from PIL import Image

import mask_former.data.datasets  # noqa: F401  (registers the datasets)
from conftest import REPO_ROOT, shared_path
from helpers import import_script
from mask_former.data.datasets import (
    register_ade20k_full,
    register_ade20k_panoptic,
    register_camvid,
    register_mapillary_vistas,
)

ADE = "ADEChallengeData2016"
SPLITS = ("training", "validation")


@pytest.fixture(scope="module")
def prepare():
    """datasets/prepare_ade20k.py as a module (datasets/ is not a package)."""
    return import_script(REPO_ROOT / "datasets" / "prepare_ade20k.py")


@contextlib.contextmanager
def captured_warnings(module, caplog):
    """caplog for one module's logger, even where a detectron2 logger setup stops propagation."""
    logger = logging.getLogger(module.__name__)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)


@contextlib.contextmanager
def temporary_names(*names):
    """Removes test-only dataset names from the catalogs afterwards."""
    try:
        yield names
    finally:
        for name in names:
            if name in DatasetCatalog:
                DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_all_dataset_names_are_registered():
    expected = [
        "ade20k_full_sem_seg_train", "ade20k_full_sem_seg_val",
        "ade20k_panoptic_train", "ade20k_panoptic_val",
        "coco_2017_train_stuff_10k_sem_seg", "coco_2017_test_stuff_10k_sem_seg",
        "mapillary_vistas_sem_seg_train", "mapillary_vistas_sem_seg_val",
        "camvid_sem_seg_train", "camvid_sem_seg_val",
        # detectron2's built-ins the configs use
        "ade20k_sem_seg_train", "ade20k_sem_seg_val",
    ]
    registered = set(DatasetCatalog.list())
    assert [name for name in expected if name not in registered] == []


# ---- datasets/prepare_ade20k.py

def make_ade20k_annotations(root):
    """Two label maps per split, each with every value 0..150; returns {(split, file): labels}."""
    rng = np.random.default_rng(0)
    written = {}
    for split in SPLITS:
        folder = root / ADE / "annotations" / split
        folder.mkdir(parents=True)
        for i in range(2):
            labels = rng.integers(0, 151, size=(16, 20)).astype(np.uint8)
            labels.flat[:151] = rng.permutation(151)
            name = f"ADE_{split}_{i:08d}.png"
            Image.fromarray(labels).save(folder / name)
            written[split, name] = labels
    return written


def read_path(root, split, name):
    return root / ADE / "annotations_detectron2" / split / name


def read_output(root, split, name):
    return np.asarray(Image.open(read_path(root, split, name)))


def test_prepare_ade20k_shifts_classes_and_maps_unlabeled_to_255(tmp_path, prepare, capsys):
    written = make_ade20k_annotations(tmp_path)
    assert prepare.main(["--root", str(tmp_path), "--no-progress"]) == 0
    assert "training: 2 converted, 0 skipped" in capsys.readouterr().out
    for (split, name), labels in written.items():
        output = read_output(tmp_path, split, name)
        assert output.dtype == np.uint8
        expected = np.where(labels == 0, 255, labels.astype(np.int64) - 1)
        np.testing.assert_array_equal(output, expected)
        assert set(np.unique(output)) == set(range(150)) | {255}


def test_prepare_ade20k_rerun_skips_unless_overwrite(tmp_path, prepare):
    written = make_ade20k_annotations(tmp_path)
    first = prepare.prepare_ade20k(str(tmp_path), progress=False)
    assert first == {split: {"converted": 2, "skipped": 0} for split in SPLITS}
    outputs = {key: read_path(tmp_path, *key) for key in written}

    def state():
        return {key: (path.read_bytes(), path.stat().st_mtime_ns) for key, path in outputs.items()}

    before = state()

    again = prepare.prepare_ade20k(str(tmp_path), progress=False)
    assert again == {split: {"converted": 0, "skipped": 2} for split in SPLITS}
    assert state() == before

    redone = prepare.prepare_ade20k(str(tmp_path), overwrite=True, progress=False)
    assert redone == first
    for key, path in outputs.items():
        assert path.read_bytes() == before[key][0]
    # No temporary files are left behind for load_sem_seg to trip over.
    for split in SPLITS:
        assert sorted(os.listdir(tmp_path / ADE / "annotations_detectron2" / split)) == sorted(
            name for s, name in written if s == split)


def test_prepare_ade20k_missing_input_fails_clearly(tmp_path, prepare, capsys):
    assert prepare.main(["--root", str(tmp_path), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert str(tmp_path / ADE / "annotations" / "training") in error
    assert "--root" in error
    assert not (tmp_path / ADE).exists()  # nothing was written
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare.convert_ade20k_annotations(str(tmp_path / "absent"), str(tmp_path / "out"))


def test_prepare_ade20k_rejects_labels_out_of_range(tmp_path, prepare):
    make_ade20k_annotations(tmp_path)
    bad = tmp_path / ADE / "annotations" / "validation" / "ADE_bad.png"
    Image.fromarray(np.full((4, 4), 151, np.uint8)).save(bad)
    with pytest.raises(ValueError, match="ADE_bad.png"):
        prepare.prepare_ade20k(str(tmp_path), progress=False)


def test_prepare_ade20k_root_defaults_to_detectron2_datasets(tmp_path, monkeypatch, prepare):
    make_ade20k_annotations(tmp_path)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert prepare.main(["--no-progress"]) == 0
    assert (tmp_path / ADE / "annotations_detectron2" / "validation").is_dir()


# ---- CamVid (real data from ../shared)

def test_camvid_val_is_read_from_detectron2_datasets_when_loaded(monkeypatch):
    camvid = shared_path("camvid")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(camvid.parent))
    dataset_dicts = DatasetCatalog.get("camvid_sem_seg_val")
    assert len(dataset_dicts) == 101
    for record in dataset_dicts:
        assert os.path.isfile(record["file_name"]) and os.path.isfile(record["sem_seg_file_name"])
        assert record["file_name"].startswith(str(camvid / "images" / "val"))
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        assert os.path.basename(record["sem_seg_file_name"]) == stem + ".png"

    metadata = MetadataCatalog.get("camvid_sem_seg_val")
    assert metadata.stuff_classes == list(register_camvid.CAMVID_CLASSES)
    assert len(metadata.stuff_classes) == 11 and len(metadata.stuff_colors) == 11
    assert metadata.ignore_label == 11
    assert metadata.evaluator_type == "sem_seg"
    # The label maps use exactly the classes and the ignore label the metadata declares.
    labels = np.asarray(Image.open(dataset_dicts[0]["sem_seg_file_name"]))
    assert set(np.unique(labels)) <= set(range(12))


def test_camvid_missing_root_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        DatasetCatalog.get("camvid_sem_seg_train")
    assert str(tmp_path / "camvid" / "images" / "train") in str(error.value)
    assert "DETECTRON2_DATASETS" in str(error.value)


# ---- Mapillary Vistas

def test_mapillary_names_and_colors_come_from_config_json(tmp_path):
    labels = [
        {"name": "nature--sky", "readable": "Sky", "color": [70, 130, 180], "evaluate": True},
        {"name": "construction--flat--road", "readable": "Road", "color": [128, 64, 128],
         "evaluate": True},
        {"name": "void--unlabeled", "readable": "Unlabeled", "color": [0, 0, 0], "evaluate": False},
    ]
    config = tmp_path / "mapillary_vistas" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"labels": labels, "version": "1.2"}))

    read = register_mapillary_vistas.read_mapillary_vistas_labels(
        register_mapillary_vistas.config_path(str(tmp_path)))
    metadata = register_mapillary_vistas.mapillary_vistas_metadata(read)
    assert metadata["stuff_classes"] == ["Sky", "Road"]
    assert metadata["stuff_colors"] == [[70, 130, 180], [128, 64, 128]]
    assert metadata["ignore_label"] == 65 and metadata["evaluator_type"] == "sem_seg"


def test_mapillary_without_config_json_has_generic_names_and_warns_on_load(tmp_path, caplog):
    absent = str(tmp_path / "config.json")
    assert register_mapillary_vistas.read_mapillary_vistas_labels(absent) is None
    metadata = register_mapillary_vistas.mapillary_vistas_metadata(None)
    assert metadata["stuff_classes"] == [f"class_{i}" for i in range(65)]
    assert "stuff_colors" not in metadata

    split = tmp_path / "mapillary_vistas" / "validation"
    (split / "images").mkdir(parents=True)
    (split / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(split / "images" / "a.jpg")
    Image.fromarray(np.full((4, 4), 65, np.uint8)).save(split / "labels" / "a.png")
    with captured_warnings(register_mapillary_vistas, caplog):
        dataset_dicts = register_mapillary_vistas.load_mapillary_vistas(
            "val", str(tmp_path), generic_names=True)
    assert len(dataset_dicts) == 1
    assert "config.json" in caplog.text and "class_0" in caplog.text


def test_mapillary_registered_metadata():
    metadata = MetadataCatalog.get("mapillary_vistas_sem_seg_val")
    assert len(metadata.stuff_classes) == 65
    assert metadata.ignore_label == 65 and metadata.evaluator_type == "sem_seg"


# ---- ADE20K-Full

def test_ade20k_full_class_names_file(tmp_path, caplog):
    path = tmp_path / register_ade20k_full.CLASS_NAMES_FILE
    assert register_ade20k_full.read_ade20k_full_class_names(str(path)) is None
    names = [f"name {i}, synonym" for i in range(847)]
    path.write_text("\n".join(names) + "\n")
    assert register_ade20k_full.read_ade20k_full_class_names(str(path)) == names
    path.write_text("wall\nsky\n")
    with captured_warnings(register_ade20k_full, caplog):
        assert register_ade20k_full.read_ade20k_full_class_names(str(path)) is None
    assert "2 class names" in caplog.text

    metadata = MetadataCatalog.get("ade20k_full_sem_seg_val")
    assert len(metadata.stuff_classes) == 847
    assert metadata.ignore_label == 65535 and metadata.evaluator_type == "sem_seg"


def test_ade20k_full_missing_data_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="images_detectron2"):
        DatasetCatalog.get("ade20k_full_sem_seg_val")


# ---- COCO-Stuff-10K

def test_coco_stuff_10k_metadata():
    metadata = MetadataCatalog.get("coco_2017_train_stuff_10k_sem_seg")
    classes = metadata.stuff_classes
    assert len(classes) == 171 and len(set(classes)) == 171
    assert [classes[i] for i in (0, 79, 80, 170)] == ["person", "toothbrush", "banner", "wood"]
    id_map = metadata.stuff_dataset_id_to_contiguous_id
    assert (id_map[1], id_map[90], id_map[92], id_map[182]) == (0, 79, 80, 170)
    assert sorted(id_map.values()) == list(range(171))
    assert metadata.ignore_label == 255 and metadata.evaluator_type == "sem_seg"


# ---- ADE20K panoptic

def make_ade20k_panoptic(root, split="val"):
    """A one-image ADE20K panoptic tree in the layout of the official conversion."""
    base = root / ADE
    dirname = dict(train="training", val="validation")[split]
    categories = [
        {"id": i, "name": name, "isthing": int(i in (7, 12)), "color": [i, i, i]}
        for i, name in enumerate(ADE20K_SEM_SEG_CATEGORIES)
    ]
    stem = f"ADE_{split}_00000001"
    annotation = {"image_id": stem, "file_name": stem + ".png", "segments_info": [
        {"id": 1, "category_id": 0, "area": 10, "bbox": [0, 0, 5, 2], "iscrowd": 0},
        {"id": 2, "category_id": 12, "area": 6, "bbox": [0, 2, 3, 2], "iscrowd": 0},
    ]}
    image_dir = base / "images" / dirname
    panoptic_dir = base / f"ade20k_panoptic_{split}"
    semantic_dir = base / "annotations_detectron2" / dirname
    for folder in (image_dir, panoptic_dir, semantic_dir):
        folder.mkdir(parents=True)
    (base / f"ade20k_panoptic_{split}.json").write_text(json.dumps(
        {"images": [{"id": stem, "file_name": stem + ".jpg"}], "annotations": [annotation],
         "categories": categories}))
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(image_dir / (stem + ".jpg"))
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(panoptic_dir / (stem + ".png"))
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(semantic_dir / (stem + ".png"))
    return base


def test_ade20k_panoptic_loads_panoptic_and_semantic_files(tmp_path):
    name = f"test_ade20k_panoptic_{uuid.uuid4().hex}"
    with temporary_names(name):
        # Registered before the json exists: the thing ids arrive when the dataset is loaded.
        register_ade20k_panoptic.register_ade20k_panoptic_split(name, "val", str(tmp_path))
        metadata = MetadataCatalog.get(name)
        assert not hasattr(metadata, "thing_dataset_id_to_contiguous_id")
        base = make_ade20k_panoptic(tmp_path)

        (record,) = DatasetCatalog.get(name)
        assert record["file_name"] == str(base / "images" / "validation" / "ADE_val_00000001.jpg")
        assert record["pan_seg_file_name"] == str(
            base / "ade20k_panoptic_val" / "ADE_val_00000001.png")
        assert record["sem_seg_file_name"] == str(
            base / "annotations_detectron2" / "validation" / "ADE_val_00000001.png")
        segments = [(s["category_id"], s["isthing"]) for s in record["segments_info"]]
        assert segments == [(0, False), (12, True)]
        assert metadata.thing_dataset_id_to_contiguous_id == {7: 7, 12: 12}
        assert len(metadata.stuff_dataset_id_to_contiguous_id) == 150
        assert metadata.stuff_classes == list(ADE20K_SEM_SEG_CATEGORIES)
        assert metadata.panoptic_json == str(base / "ade20k_panoptic_val.json")
        assert metadata.evaluator_type == "ade20k_panoptic_seg" and metadata.label_divisor == 1000


def test_ade20k_panoptic_reads_thing_ids_at_registration_when_json_exists(tmp_path):
    make_ade20k_panoptic(tmp_path, split="train")
    name = f"test_ade20k_panoptic_{uuid.uuid4().hex}"
    with temporary_names(name):
        register_ade20k_panoptic.register_ade20k_panoptic_split(name, "train", str(tmp_path))
        assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {7: 7, 12: 12}


def test_ade20k_panoptic_missing_json_names_the_path(tmp_path):
    name = f"test_ade20k_panoptic_{uuid.uuid4().hex}"
    with temporary_names(name):
        register_ade20k_panoptic.register_ade20k_panoptic_split(name, "val", str(tmp_path))
        with pytest.raises(FileNotFoundError, match="ade20k_panoptic_val.json"):
            DatasetCatalog.get(name)
