"""The embedded synthetic shapes dataset: deterministic, consistent, written once."""
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask_former.data import synthetic_shapes
from mask_former.data.io import rgb_to_id
from mask_former.data.synthetic_shapes import CLASSES, IS_THING, generate_sample


def test_samples_are_deterministic_and_consistent():
    first = generate_sample(1234)
    second = generate_sample(1234)
    for a, b in zip(first[:3], second[:3]):
        assert np.array_equal(a, b)
    image, semantic, segment_ids, segments_info = first
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert set(np.unique(semantic)) <= set(range(len(CLASSES)))
    # The semantic map is the panoptic map's categories; every pixel belongs to one segment.
    categories = {s["id"]: s["category_id"] for s in segments_info}
    assert set(np.unique(segment_ids)) == set(categories)
    rebuilt = np.vectorize(categories.get)(segment_ids)
    assert np.array_equal(rebuilt, semantic)
    assert all(s["isthing"] == IS_THING[s["category_id"]] for s in segments_info)
    assert sum(s["area"] for s in segments_info) == semantic.size


def test_different_seeds_differ():
    assert not np.array_equal(generate_sample(1)[0], generate_sample(2)[0])


@pytest.fixture
def small_dataset(tmp_path, monkeypatch):
    monkeypatch.setitem(synthetic_shapes.SPLITS, "train", (6, 1000))
    monkeypatch.setitem(synthetic_shapes.SPLITS, "val", (4, 2000))
    monkeypatch.setenv("MASK_FORMER_CACHE", str(tmp_path))
    return tmp_path


def test_registered_datasets_are_generated_once(small_dataset):
    dicts = DatasetCatalog.get("synthetic_shapes_panoptic_val")
    assert len(dicts) == 4
    record = dicts[0]
    image = cv2.imread(record["file_name"])
    panoptic = rgb_to_id(cv2.imread(record["pan_seg_file_name"])[..., ::-1])
    semantic = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    expected_image, expected_semantic, expected_ids, expected_info = generate_sample(2000)
    assert np.array_equal(image[..., ::-1], expected_image)  # PNG: lossless
    assert np.array_equal(semantic, expected_semantic)
    assert np.array_equal(panoptic, expected_ids)
    assert record["segments_info"] == expected_info

    mtime = os.path.getmtime(record["file_name"])
    assert len(DatasetCatalog.get("synthetic_shapes_sem_seg_train")) == 6
    assert os.path.getmtime(record["file_name"]) == mtime  # not written again


def test_metadata():
    metadata = MetadataCatalog.get("synthetic_shapes_panoptic_train")
    assert metadata.stuff_classes == CLASSES
    assert set(metadata.thing_dataset_id_to_contiguous_id.values()) == {2, 3, 4}
    assert metadata.evaluator_type == "synthetic_panoptic_seg"
    assert MetadataCatalog.get("synthetic_shapes_sem_seg_val").evaluator_type == "sem_seg"
