"""The dataset preparation scripts, datasets/prepare_*.py, on miniature input trees.

Each test builds a few tiny files with known values in tmp_path, runs a script, and checks its
outputs exactly, loading them through the registered loader functions where the project reads them.
"""
import importlib.util
import json
import os
import sys
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import scipy.io
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES
from detectron2.data.detection_utils import read_image
from PIL import Image

import mask_former.data.datasets  # noqa: F401  (registers the datasets)
from conftest import REPO_ROOT
from helpers import temporary_names
from mask_former.data.io import rgb_to_id
from mask_former.data.datasets import (
    register_ade20k_full,
    register_ade20k_panoptic,
    register_coco_stuff_10k,
)
from mask_former.data.datasets.ade20k_categories import (
    ADE20K_COLORS,
    ADE20K_INSTANCE_CATEGORIES,
    ADE20K_THING_CLASSES,
)
from mask_former.data.datasets.ade20k_full_categories import ADE20K_FULL_CATEGORIES
from mask_former.data.datasets.preparation import (
    BadInputError,
    MissingInputError,
    atomic_output,
    require_inputs,
)

ADE = "ADEChallengeData2016"
ADE_SPLITS = ("training", "validation")


def load_script(name):
    """datasets/NAME.py as a module (datasets/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Known by name, as a script's own module is, so that a process pool can pickle its functions.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepare():
    return load_script("prepare_ade20k")


@pytest.fixture(scope="module")
def panoptic():
    return load_script("prepare_ade20k_panoptic")


@pytest.fixture(scope="module")
def full():
    return load_script("prepare_ade20k_full")


@pytest.fixture(scope="module")
def stuff():
    return load_script("prepare_coco_stuff_10k")


def save(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def read(path):
    return np.asarray(Image.open(path))


def tree_state(folder):
    """{relative path: (bytes, mtime)} of every file below `folder`."""
    return {
        os.path.relpath(os.path.join(directory, name), folder): (
            open(os.path.join(directory, name), "rb").read(),
            os.stat(os.path.join(directory, name)).st_mtime_ns)
        for directory, _, names in os.walk(folder) for name in names
    }


# ---- the category tables

def test_ade20k_full_categories():
    assert len(ADE20K_FULL_CATEGORIES) == 847
    assert len({object_id for object_id, _ in ADE20K_FULL_CATEGORIES}) == 847
    assert len({name for _, name in ADE20K_FULL_CATEGORIES}) == 847
    assert ADE20K_FULL_CATEGORIES[0] == (2978, "wall")
    assert ADE20K_FULL_CATEGORIES[2] == (2420, "sky")
    assert ADE20K_FULL_CATEGORIES[99] == (
        3144, "aircraft carrier, carrier, flattop, attack aircraft carrier")
    assert ADE20K_FULL_CATEGORIES[846] == (3148, "adding machine, totalizer, totaliser")
    metadata = MetadataCatalog.get("ade20k_full_sem_seg_val")
    assert metadata.stuff_classes == [name for _, name in ADE20K_FULL_CATEGORIES]
    assert metadata.stuff_dataset_id_to_contiguous_id[3148] == 846
    assert metadata.ignore_label == 65535 and metadata.evaluator_type == "sem_seg"


def test_ade20k_instance_categories_and_things():
    assert len(ADE20K_INSTANCE_CATEGORIES) == 100
    # Instance categories 1, 4, 92, 100 of the release's mapping file (scene-parsing labels 8, 13,
    # 139, 150).
    assert [ADE20K_INSTANCE_CATEGORIES[k - 1] for k in (1, 4, 92, 100)] == [
        ("bed", 7), ("person", 12), ("ashcan", 138), ("flag", 149)]
    assert len(ADE20K_THING_CLASSES) == 100
    assert [ADE20K_SEM_SEG_CATEGORIES[c] for c in (7, 12, 149)] == ["bed", "person", "flag"]
    stuff = [ADE20K_SEM_SEG_CATEGORIES[c] for c in range(150) if c not in ADE20K_THING_CLASSES]
    assert len(stuff) == 50 and stuff[:4] == ["wall", "building", "sky", "floor"]
    assert len(ADE20K_COLORS) == 150 and len(set(ADE20K_COLORS)) == 150
    assert (ADE20K_COLORS[0], ADE20K_COLORS[48], ADE20K_COLORS[149]) == (
        (120, 120, 120), (140, 140, 200), (92, 0, 255))


# ---- datasets/prepare_ade20k.py

def make_ade20k_annotations(root):
    """Two label maps per split, each with every value 0..150; returns {(split, file): labels}."""
    rng = np.random.default_rng(0)
    written = {}
    for split in ADE_SPLITS:
        for i in range(2):
            labels = rng.integers(0, 151, size=(16, 20)).astype(np.uint8)
            labels.flat[:151] = rng.permutation(151)
            name = f"ADE_{split}_{i:08d}.png"
            save(labels, root / ADE / "annotations" / split / name)
            written[split, name] = labels
    return written


def semantic_output(root, split, name):
    return root / ADE / "annotations_detectron2" / split / name


def test_prepare_ade20k_shifts_classes_and_maps_unlabeled_to_255(tmp_path, prepare, capsys):
    written = make_ade20k_annotations(tmp_path)
    assert prepare.main(["--root", str(tmp_path), "--no-progress", "--workers", "1"]) == 0
    assert "training: 2 converted, 0 skipped" in capsys.readouterr().out
    for (split, name), labels in written.items():
        output = read(semantic_output(tmp_path, split, name))
        assert output.dtype == np.uint8
        expected = np.where(labels == 0, 255, labels.astype(np.int64) - 1)
        np.testing.assert_array_equal(output, expected)
        assert set(np.unique(output)) == set(range(150)) | {255}


def test_prepare_ade20k_rerun_skips_unless_overwrite(tmp_path, prepare):
    written = make_ade20k_annotations(tmp_path)
    first = prepare.prepare_ade20k(str(tmp_path), progress=False)
    assert first == {split: {"converted": 2, "skipped": 0} for split in ADE_SPLITS}
    outputs = tmp_path / ADE / "annotations_detectron2"
    before = tree_state(outputs)

    again = prepare.prepare_ade20k(str(tmp_path), progress=False)
    assert again == {split: {"converted": 0, "skipped": 2} for split in ADE_SPLITS}
    assert tree_state(outputs) == before

    redone = prepare.prepare_ade20k(str(tmp_path), overwrite=True, progress=False)
    assert redone == first
    after = tree_state(outputs)
    # The same bytes, and no temporary files left behind for load_sem_seg to trip over.
    assert {path: data for path, (data, _) in after.items()} == {
        path: data for path, (data, _) in before.items()}
    assert sorted(after) == sorted(os.path.join(split, name) for split, name in written)


def test_prepare_ade20k_on_a_process_pool_writes_the_same(tmp_path, prepare):
    make_ade20k_annotations(tmp_path / "one")
    make_ade20k_annotations(tmp_path / "two")
    prepare.prepare_ade20k(str(tmp_path / "one"), progress=False, workers=1)
    assert prepare.prepare_ade20k(str(tmp_path / "two"), progress=False, workers=2) == {
        split: {"converted": 2, "skipped": 0} for split in ADE_SPLITS}
    for split in ADE_SPLITS:
        for i in range(2):
            name = f"ADE_{split}_{i:08d}.png"
            assert (semantic_output(tmp_path / "one", split, name).read_bytes()
                    == semantic_output(tmp_path / "two", split, name).read_bytes())


def test_prepare_ade20k_missing_input_fails_clearly(tmp_path, prepare, capsys):
    assert prepare.main(["--root", str(tmp_path), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"prepare_ade20k: error: missing '{tmp_path / ADE}'; expected "
                            f"ADEChallengeData2016/annotations/{{training,validation}}/*.png ")
    assert error.count("\n") == 1
    assert "--root" in error and "ADEChallengeData2016.zip" in error
    assert not (tmp_path / ADE).exists()  # nothing was written
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare.convert_ade20k_annotations(str(tmp_path / "absent"), str(tmp_path / "out"))


def test_prepare_ade20k_rejects_labels_out_of_range(tmp_path, prepare):
    make_ade20k_annotations(tmp_path)
    save(np.full((4, 4), 151), tmp_path / ADE / "annotations" / "validation" / "ADE_bad.png")
    with pytest.raises(ValueError, match="ADE_bad.png: label 151 is out of range"):
        prepare.prepare_ade20k(str(tmp_path), progress=False)


def test_prepare_ade20k_root_defaults_to_detectron2_datasets(tmp_path, monkeypatch, prepare):
    make_ade20k_annotations(tmp_path)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert prepare.main(["--no-progress"]) == 0
    assert (tmp_path / ADE / "annotations_detectron2" / "validation").is_dir()


# ---- datasets/prepare_ade20k_panoptic.py

WALL, SKY, BED, PERSON = 0, 2, 7, 12  # class indices; the semantic maps hold them + 1
BED_CATEGORY, PERSON_CATEGORY = 1, 4  # instance categories (R)

# One validation image, 4 x 6: wall and sky (stuff), two persons and a bed (things) on unlabeled
# ground; a third person stands on the wall, and part of the bed has no instance.
SEMANTIC = np.array([
    [1, 1, 1, 3, 3, 3],
    [1, 1, 1, 3, 3, 3],
    [13, 13, 8, 8, 0, 0],
    [13, 13, 8, 8, 0, 0],
])
INSTANCE_IDS = np.array([  # G
    [0, 0, 3, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
    [1, 2, 7, 7, 0, 0],
    [1, 2, 0, 0, 0, 0],
])
INSTANCE_CATEGORIES = np.where(np.isin(INSTANCE_IDS, [1, 2, 3]), PERSON_CATEGORY,
                               np.where(INSTANCE_IDS == 7, BED_CATEGORY, 0))  # R
# Segment ids: (class + 1) * 1000, + 1, 2, ... for a class's instances in instance-id order.
PANOPTIC_IDS = np.array([
    [1000, 1000, 13003, 3000, 3000, 3000],
    [1000, 1000, 1000, 3000, 3000, 3000],
    [13001, 13002, 8001, 8001, 0, 0],
    [13001, 13002, 0, 0, 0, 0],
])
SEGMENTS_INFO = [  # in id order
    {"id": 1000, "category_id": WALL, "area": 5, "bbox": [0, 0, 3, 2], "iscrowd": 0},
    {"id": 3000, "category_id": SKY, "area": 6, "bbox": [3, 0, 3, 2], "iscrowd": 0},
    {"id": 8001, "category_id": BED, "area": 2, "bbox": [2, 2, 2, 1], "iscrowd": 0},
    {"id": 13001, "category_id": PERSON, "area": 2, "bbox": [0, 2, 1, 2], "iscrowd": 0},
    {"id": 13002, "category_id": PERSON, "area": 2, "bbox": [1, 2, 1, 2], "iscrowd": 0},
    {"id": 13003, "category_id": PERSON, "area": 1, "bbox": [2, 0, 1, 1], "iscrowd": 0},
]
VAL_STEM = "ADE_val_00000001"


def make_ade20k_panoptic_inputs(root, extra_val_images=0):
    """The validation image above (and copies of it), one training image of wall only."""
    base = root / ADE
    stems = {"validation": [VAL_STEM] + [f"ADE_val_{i + 2:08d}" for i in range(extra_val_images)],
             "training": ["ADE_train_00000001"]}
    for split, split_stems in stems.items():
        for stem in split_stems:
            semantic = SEMANTIC if split == "validation" else np.ones((3, 2))
            instance = (np.stack([INSTANCE_CATEGORIES, INSTANCE_IDS, np.zeros_like(SEMANTIC)], -1)
                        if split == "validation" else np.zeros((3, 2, 3)))
            save(np.zeros(semantic.shape + (3,)), base / "images" / split / f"{stem}.jpg")
            save(semantic, base / "annotations" / split / f"{stem}.png")
            save(instance, base / "annotations_instance" / split / f"{stem}.png")
    return base


def test_prepare_ade20k_panoptic_loads_through_the_registration(tmp_path, panoptic, prepare,
                                                                 capsys):
    base = make_ade20k_panoptic_inputs(tmp_path)
    assert panoptic.main(["--root", str(tmp_path), "--no-progress", "--workers", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "train: 1 converted, 0 skipped (already there; --overwrite to redo); 1 segments, "
        "0 instances",
        "val: 1 converted, 0 skipped (already there; --overwrite to redo); 6 segments, "
        "4 instances",
    ]
    prepare.prepare_ade20k(str(tmp_path), progress=False)  # the semantic maps it also reads

    with temporary_names(f"test_ade20k_panoptic_{uuid.uuid4().hex}") as (name,):
        register_ade20k_panoptic.register_ade20k_panoptic_split(name, "val", str(tmp_path))
        (record,) = DatasetCatalog.get(name)
        metadata = MetadataCatalog.get(name)
    assert record["file_name"] == str(base / "images" / "validation" / f"{VAL_STEM}.jpg")
    assert record["sem_seg_file_name"] == str(
        base / "annotations_detectron2" / "validation" / f"{VAL_STEM}.png")
    assert record["image_id"] == VAL_STEM
    assert record["segments_info"] == [
        dict(segment, isthing=segment["category_id"] in (BED, PERSON)) for segment in SEGMENTS_INFO]
    assert record["pan_seg_file_name"] == str(base / "ade20k_panoptic_val" / f"{VAL_STEM}.png")
    np.testing.assert_array_equal(rgb_to_id(read(record["pan_seg_file_name"])), PANOPTIC_IDS)
    np.testing.assert_array_equal(read(record["sem_seg_file_name"]), SEMANTIC.astype(np.uint8) - 1)
    assert metadata.thing_dataset_id_to_contiguous_id == {c: c for c in sorted(ADE20K_THING_CLASSES)}
    assert metadata.stuff_classes == list(ADE20K_SEM_SEG_CATEGORIES)
    assert metadata.stuff_colors[BED] == [204, 5, 255]
    assert metadata.ignore_label == 255 and metadata.label_divisor == 1000

    panoptic_json = json.loads((base / "ade20k_panoptic_val.json").read_text())
    assert panoptic_json["images"] == [
        {"id": VAL_STEM, "file_name": f"{VAL_STEM}.jpg", "width": 6, "height": 4}]
    assert panoptic_json["categories"][BED] == {
        "id": BED, "name": "bed", "isthing": 1, "color": [204, 5, 255]}
    assert panoptic_json["categories"][WALL] == {
        "id": WALL, "name": "wall", "isthing": 0, "color": [120, 120, 120]}


def test_prepare_ade20k_panoptic_writes_mask2former_instance_json(tmp_path, panoptic):
    base = make_ade20k_panoptic_inputs(tmp_path)
    panoptic.prepare_ade20k_panoptic(str(tmp_path), progress=False)
    instance_json = base / "ade20k_instance_val.json"
    categories = json.loads(instance_json.read_text())["categories"]
    assert len(categories) == 100
    assert categories[:2] == [{"id": BED, "name": "bed"}, {"id": 8, "name": "windowpane"}]

    # As Mask2Former's `ade20k_instance_val` reads it: contiguous thing ids in category order.
    with temporary_names(f"test_ade20k_instance_{uuid.uuid4().hex}") as (name,):
        (record,) = load_coco_json(str(instance_json), str(base / "images" / "validation"), name)
        metadata = MetadataCatalog.get(name)
    assert metadata.thing_dataset_id_to_contiguous_id == {
        class_index: i for i, (_, class_index) in enumerate(ADE20K_INSTANCE_CATEGORIES)}
    assert metadata.thing_classes[:2] == ["bed", "windowpane"]
    assert record["file_name"] == str(base / "images" / "validation" / f"{VAL_STEM}.jpg")
    assert (record["image_id"], record["height"], record["width"]) == (VAL_STEM, 4, 6)
    annotations = record["annotations"]
    assert [a["category_id"] for a in annotations] == [0, 3, 3, 3]  # bed, then the persons
    assert [a["bbox"] for a in annotations] == [s["bbox"] for s in SEGMENTS_INFO[2:]]
    for annotation, segment_id in zip(annotations, (8001, 13001, 13002, 13003)):
        np.testing.assert_array_equal(mask_util.decode(annotation["segmentation"]),
                                      PANOPTIC_IDS == segment_id)
        assert annotation["iscrowd"] == 0
    ids = [a["id"] for a in json.loads(instance_json.read_text())["annotations"]]
    assert ids == [1, 2, 3, 4]


def test_prepare_ade20k_panoptic_resumes_a_killed_run(tmp_path, panoptic, monkeypatch, capsys):
    reference = tmp_path / "reference"
    make_ade20k_panoptic_inputs(reference, extra_val_images=2)
    panoptic.prepare_ade20k_panoptic(str(reference), progress=False)

    killed = tmp_path / "killed"
    base = make_ade20k_panoptic_inputs(killed, extra_val_images=2)
    save_image = panoptic.save_image
    calls = []

    def save_then_die(array, path, **params):
        calls.append(path)
        if len(calls) == 3:  # the train image, then the first validation image, are done
            raise KeyboardInterrupt
        save_image(array, path, **params)

    monkeypatch.setattr(panoptic, "save_image", save_then_die)
    assert panoptic.main(["--root", str(killed), "--no-progress", "--workers", "1"]) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert sorted(os.listdir(base / "ade20k_panoptic_val")) == [f"{VAL_STEM}.png"]
    assert not (base / "ade20k_panoptic_val.json").exists()
    monkeypatch.undo()

    assert panoptic.prepare_ade20k_panoptic(str(killed), progress=False)["val"] == {
        "converted": 2, "skipped": 1, "segments": 18, "instances": 12}
    for name in ("ade20k_panoptic_val.json", "ade20k_instance_val.json",
                 "ade20k_panoptic_train.json", "ade20k_instance_train.json"):
        assert (base / name).read_bytes() == (reference / ADE / name).read_bytes()
    assert tree_state(base / "ade20k_panoptic_val").keys() == {
        f"{VAL_STEM}.png", "ADE_val_00000002.png", "ADE_val_00000003.png"}


def test_prepare_ade20k_panoptic_on_a_process_pool_writes_the_same(tmp_path, panoptic):
    for name, workers in (("one", 1), ("two", 2)):
        make_ade20k_panoptic_inputs(tmp_path / name, extra_val_images=3)
        panoptic.prepare_ade20k_panoptic(str(tmp_path / name), progress=False, workers=workers)
    one = tree_state(tmp_path / "one" / ADE)
    two = tree_state(tmp_path / "two" / ADE)
    assert {path: data for path, (data, _) in one.items()} == {
        path: data for path, (data, _) in two.items()}


def test_prepare_ade20k_panoptic_missing_instance_release_fails_clearly(tmp_path, panoptic,
                                                                        capsys):
    base = make_ade20k_panoptic_inputs(tmp_path)
    for split in ADE_SPLITS:
        for path in (base / "annotations_instance" / split).iterdir():
            path.unlink()
        (base / "annotations_instance" / split).rmdir()
    assert panoptic.main(["--root", str(tmp_path), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"prepare_ade20k_panoptic: error: missing "
                            f"'{base / 'annotations_instance' / 'training'}', "
                            f"'{base / 'annotations_instance' / 'validation'}'; expected ")
    assert "annotations_instance.tar" in error
    assert not (base / "ade20k_panoptic_train").exists()


def test_prepare_ade20k_panoptic_rejects_bad_instance_maps(tmp_path, panoptic):
    base = make_ade20k_panoptic_inputs(tmp_path)
    instance_file = base / "annotations_instance" / "validation" / f"{VAL_STEM}.png"
    instance = read(instance_file).copy()
    instance[2, 0, 0] = BED_CATEGORY  # instance 1 is partly a person, partly a bed
    save(instance, instance_file)
    with pytest.raises(BadInputError, match=f"{VAL_STEM}.png: instance 1 .G. has pixels of "
                                            f"several categories"):
        panoptic.prepare_ade20k_panoptic(str(tmp_path), progress=False)

    instance[2, 0, 0] = PERSON_CATEGORY
    instance[0, 2, 0] = 101
    save(instance, instance_file)
    with pytest.raises(BadInputError, match="category .R. 101, expected 1..100"):
        panoptic.prepare_ade20k_panoptic(str(tmp_path), progress=False)


def test_prepare_ade20k_panoptic_refuses_to_resume_over_other_pngs(tmp_path, panoptic):
    base = make_ade20k_panoptic_inputs(tmp_path)
    # The official conversion's ids come from the category colours: wall's is (120, 120, 120).
    save(np.full((4, 6, 3), 120), base / "ade20k_panoptic_val" / f"{VAL_STEM}.png")
    with pytest.raises(BadInputError, match="segment id 7895160 was not written by this script; "
                                            "convert again with --overwrite"):
        panoptic.prepare_ade20k_panoptic(str(tmp_path), progress=False)
    panoptic.prepare_ade20k_panoptic(str(tmp_path), overwrite=True, progress=False)
    np.testing.assert_array_equal(
        rgb_to_id(read(base / "ade20k_panoptic_val" / f"{VAL_STEM}.png")), PANOPTIC_IDS)


# ---- datasets/prepare_ade20k_full.py

FULL = "ADE20K_2021_17_01"


def seg_png(object_ids, r_remainder=0):
    """The *_seg.png encoding of object ids: R = id // 256 * 10 (+ a remainder the decoding drops),
    G = id % 256."""
    object_ids = np.asarray(object_ids)
    return np.stack([object_ids // 256 * 10 + r_remainder, object_ids % 256,
                     np.zeros_like(object_ids)], axis=-1)


def make_ade20k_full_inputs(root):
    """A small training image, and a validation image large enough to be resized (600 x 520)."""
    ade = root / FULL / "images" / "ADE"
    small = ade / "training" / "cultural" / "apse_indoor" / "ADE_train_00000001.jpg"
    save(np.full((2, 3, 3), 128), small)
    # wall, sky, an object left out of the 847 (1), unlabeled (0); then "adding machine".
    save(seg_png([[2978, 2420, 1], [0, 3148, 2978]], r_remainder=5),
         small.parent / "ADE_train_00000001_seg.png")
    large = ade / "validation" / "urban" / "street" / "ADE_val_00000001.jpg"
    save(np.full((520, 600, 3), 200), large)
    object_ids = np.full((520, 600), 2978)
    object_ids[:, 300:] = 2420
    save(seg_png(object_ids), large.parent / "ADE_val_00000001_seg.png")
    return small, large


def test_prepare_ade20k_full_loads_through_the_registration(tmp_path, full, capsys):
    small, large = make_ade20k_full_inputs(tmp_path)
    assert full.main(["--root", str(tmp_path), "--no-progress", "--workers", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{split}: 1 converted, 0 skipped (already there; --overwrite to redo)"
        for split in ("train", "val")]

    (train,) = register_ade20k_full.load_ade20k_full("train", str(tmp_path))
    base = tmp_path / FULL
    assert train["file_name"] == str(base / "images_detectron2" / "training" / small.name)
    assert train["sem_seg_file_name"] == str(
        base / "annotations_detectron2" / "training" / "ADE_train_00000001.tif")
    assert open(train["file_name"], "rb").read() == small.read_bytes()  # copied as it is
    labels = read_image(train["sem_seg_file_name"])
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, [[0, 2, 65535], [65535, 846, 0]])

    (val,) = register_ade20k_full.load_ade20k_full("val", str(tmp_path))
    image = Image.open(val["file_name"])
    # Shorter side 520 > 512: resized to 512, the longer side to round(600 / 520 * 512).
    assert (image.width, image.height) == (591, 512)
    labels = read_image(val["sem_seg_file_name"])
    assert labels.shape == (512, 591)
    assert set(np.unique(labels[:, :296])) == {0} and set(np.unique(labels[:, 296:])) == {2}


def test_prepare_ade20k_full_rerun_skips_and_missing_input_fails(tmp_path, full, capsys):
    make_ade20k_full_inputs(tmp_path)
    assert full.prepare_ade20k_full(str(tmp_path), progress=False)["val"] == {
        "converted": 1, "skipped": 0}
    before = tree_state(tmp_path / FULL / "annotations_detectron2")
    assert full.prepare_ade20k_full(str(tmp_path), progress=False) == {
        split: {"converted": 0, "skipped": 1} for split in ("train", "val")}
    assert tree_state(tmp_path / FULL / "annotations_detectron2") == before

    empty = tmp_path / "empty"
    assert full.main(["--root", str(empty), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"missing '{empty}'; expected ADE20K_2021_17_01/images/ADE/" in error
    assert "ADE20K_2021_17_01.zip" in error


def test_prepare_ade20k_full_names_the_image_without_segmentation(tmp_path, full):
    small, _ = make_ade20k_full_inputs(tmp_path)
    (small.parent / "ADE_train_00000001_seg.png").unlink()
    with pytest.raises(MissingInputError, match="ADE_train_00000001_seg.png is missing"):
        full.prepare_ade20k_full(str(tmp_path), progress=False)


# ---- datasets/prepare_coco_stuff_10k.py

STUFF = ("coco", "coco_stuff_10k")
# COCO-Stuff category ids: unlabeled, person (1), toothbrush (90), banner (92), wood (182)
LABELS = np.array([[0, 1, 90], [92, 182, 1]], dtype=np.uint16)
CLASSES = np.array([[255, 0, 79], [80, 170, 0]], dtype=np.uint8)


def make_coco_stuff_inputs(root, labels=LABELS):
    base = root.joinpath(*STUFF)
    names = {"train": ["COCO_train2014_000000000077", "COCO_train2014_000000000078"],
             "test": ["COCO_train2014_000000000079"]}
    (base / "imageLists").mkdir(parents=True)
    (base / "annotations").mkdir()
    for split, split_names in names.items():
        (base / "imageLists" / f"{split}.txt").write_text("".join(n + "\n" for n in split_names))
        for name in split_names:
            save(np.full(labels.shape + (3,), 90), base / "images" / f"{name}.jpg")
            scipy.io.savemat(base / "annotations" / f"{name}.mat",
                             {"S": labels, "names": np.array(["unlabeled"], dtype=object)})
    return base


def test_prepare_coco_stuff_10k_loads_through_the_registration(tmp_path, stuff, capsys):
    base = make_coco_stuff_inputs(tmp_path)
    assert stuff.main(["--root", str(tmp_path), "--no-progress", "--workers", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "train: 2 converted, 0 skipped (already there; --overwrite to redo)",
        "test: 1 converted, 0 skipped (already there; --overwrite to redo)"]
    records = register_coco_stuff_10k.load_coco_stuff_10k("train", str(tmp_path))
    assert [os.path.basename(r["file_name"]) for r in records] == [
        "COCO_train2014_000000000077.jpg", "COCO_train2014_000000000078.jpg"]
    for record in records:
        assert open(record["file_name"], "rb").read() == (
            base / "images" / os.path.basename(record["file_name"])).read_bytes()
        np.testing.assert_array_equal(read(record["sem_seg_file_name"]), CLASSES)
    metadata = MetadataCatalog.get("coco_2017_test_stuff_10k_sem_seg")
    assert [metadata.stuff_classes[c] for c in (0, 79, 80, 170)] == [
        "person", "toothbrush", "banner", "wood"]
    assert metadata.ignore_label == 255
    (test,) = register_coco_stuff_10k.load_coco_stuff_10k("test", str(tmp_path))
    np.testing.assert_array_equal(read(test["sem_seg_file_name"]), CLASSES)

    assert stuff.prepare_coco_stuff_10k(str(tmp_path), progress=False) == {
        "train": {"converted": 0, "skipped": 2}, "test": {"converted": 0, "skipped": 1}}


def test_prepare_coco_stuff_10k_rejects_other_ids_and_v1_0_files(tmp_path, stuff, capsys):
    base = make_coco_stuff_inputs(tmp_path, labels=np.array([[12, 1]], dtype=np.uint16))
    assert stuff.main(["--root", str(tmp_path), "--no-progress"]) == 1
    mat = base / "annotations" / "COCO_train2014_000000000077.mat"
    assert capsys.readouterr().err == (
        f"prepare_coco_stuff_10k: error: {mat}: 12 in S is not a COCO-Stuff category id\n")

    # A MATLAB v7.3 (HDF5) file, as v1.0's are: scipy reads the version from the header.
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116)
    mat.write_bytes(header + bytes(8) + b"\x00\x02IM" + bytes(512))
    with pytest.raises(BadInputError, match="is a MATLAB v7.3 file, as COCO-Stuff-10K v1.0 has"):
        stuff.prepare_coco_stuff_10k(str(tmp_path), progress=False)


def test_prepare_coco_stuff_10k_missing_input_fails_clearly(tmp_path, stuff, capsys):
    assert stuff.main(["--root", str(tmp_path), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"missing '{tmp_path / 'coco'}'; expected coco/coco_stuff_10k/" in error
    assert "cocostuff-10k-v1.1.zip" in error


# ---- the shared machinery

def test_atomic_output_renames_only_a_complete_file(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(str(target)) as tmp:
            open(tmp, "wb").write(b"half")
            raise KeyboardInterrupt  # killed mid-write
    assert os.listdir(tmp_path) == []
    with atomic_output(str(target)) as tmp:
        assert os.path.basename(tmp) == ".out.png.tmp"
        open(tmp, "wb").write(b"whole")
    assert os.listdir(tmp_path) == ["out.png"] and target.read_bytes() == b"whole"


def test_require_inputs_names_the_outermost_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets" / "ADE" / "images").mkdir(parents=True)
    wanted = ["datasets/ADE/images", "datasets/ADE/annotations/training",
              "datasets/ADE/annotations/validation", "nowhere/at/all"]
    with pytest.raises(MissingInputError) as error:
        require_inputs(wanted, "ADE/{images,annotations}/", "datasets")
    assert str(error.value) == (
        "missing 'datasets/ADE/annotations', 'nowhere'; expected ADE/{images,annotations}/ under "
        "--root 'datasets' (default $DETECTRON2_DATASETS, else ./datasets; see datasets/README.md)")
