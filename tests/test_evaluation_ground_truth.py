"""Evaluation refuses bad ground truth, naming the files: the semantic evaluator's label maps
(values, size) and the evaluation loader's images (InferenceDatasetMapper, train_net's
build_test_loader). The panoptic evaluator's checks are in test_panoptic_evaluation.py."""
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from PIL import Image

from conftest import REPO_ROOT, shared_path
from helpers import registered_dataset, save_png, truncate, write_semantic_dataset
from mask_former import add_mask_former_config
from mask_former.data import InferenceDatasetMapper
from mask_former.data.io import DataError
from mask_former.errors import UserError
from mask_former.evaluation import CheckedSemSegEvaluator

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402

CLASSES = ["a", "b", "c"]
IGNORE = 255


def tiny_labels():
    """Three 24x32 label maps using every class, with void pixels."""
    labels = []
    for index in range(3):
        label = np.full((24, 32), index, np.uint8)
        label[:8] = (index + 1) % 3
        label[:, :4] = (index + 2) % 3
        label[-2:] = IGNORE
        labels.append(label)
    return labels


@pytest.fixture
def tiny_semantic(tmp_path):
    """A registered 3-image semantic dataset of 3 classes, void 255: (name, dataset dicts)."""
    dataset_dicts = write_semantic_dataset(tmp_path, tiny_labels())
    name = f"_test_eval_gt_{uuid.uuid4().hex}"
    with registered_dataset(name, dataset_dicts, stuff_classes=CLASSES, ignore_label=IGNORE,
                            evaluator_type="sem_seg"):
        yield name, dataset_dicts


def perfect_output(label_path, num_classes):
    """{"sem_seg": (K, H, W) scores} that argmax to the label (void pixels to class 0)."""
    label = np.asarray(Image.open(label_path)).astype(np.int64)
    label[label >= num_classes] = 0
    return {"sem_seg": torch.nn.functional.one_hot(torch.from_numpy(label), num_classes)
            .permute(2, 0, 1).float()}


def perfect_outputs(dataset_dicts, num_classes=3):
    return [perfect_output(record["sem_seg_file_name"], num_classes) for record in dataset_dicts]


def evaluate(name, dataset_dicts, outputs):
    evaluator = CheckedSemSegEvaluator(name, distributed=False)
    evaluator.reset()
    for record, output in zip(dataset_dicts, outputs):
        evaluator.process([{"file_name": record["file_name"]}], [output])
    return evaluator.evaluate()["sem_seg"]


def test_perfect_predictions_score_100(tiny_semantic):
    name, dataset_dicts = tiny_semantic
    results = evaluate(name, dataset_dicts, perfect_outputs(dataset_dicts))
    assert results["mIoU"] == 100 and results["pACC"] == 100 and results["fwIoU"] == 100
    assert [results[f"IoU-{c}"] for c in CLASSES] == [100, 100, 100]


def test_stray_label_value_names_the_file_and_the_values(tiny_semantic):
    """Before, a value that is neither a class nor void (50) passed: perfect predictions scored
    below 100, the error landing on other classes."""
    name, dataset_dicts = tiny_semantic
    outputs = perfect_outputs(dataset_dicts)
    label = tiny_labels()[1]
    label[3, 3:6] = 50
    label[4, 4] = 7
    record = dataset_dicts[1]
    save_png(record["sem_seg_file_name"], label)
    with pytest.raises(DataError) as error:
        evaluate(name, dataset_dicts, outputs)
    assert str(error.value) == (
        f"semantic label map {record['sem_seg_file_name']!r} (dataset entry of image "
        f"{record['file_name']!r}) has values [7, 50] outside the class ids [0, 3) that are not "
        f"the ignore label 255")
    assert isinstance(error.value, UserError) and isinstance(error.value, ValueError)


def test_label_of_another_size_names_both_files(tiny_semantic):
    name, dataset_dicts = tiny_semantic
    outputs = perfect_outputs(dataset_dicts)  # of the images' size
    record = dataset_dicts[2]
    save_png(record["sem_seg_file_name"], tiny_labels()[2][:, :30])
    with pytest.raises(DataError) as error:
        evaluate(name, dataset_dicts, outputs)
    assert str(error.value) == (
        f"semantic label map {record['sem_seg_file_name']!r} is 30x24 (WxH) but its image "
        f"{record['file_name']!r} is 32x24")


def test_missing_label_is_named(tiny_semantic):
    name, dataset_dicts = tiny_semantic
    record = dataset_dicts[0]
    evaluator = CheckedSemSegEvaluator(name, distributed=False)
    evaluator.reset()
    output = perfect_output(record["sem_seg_file_name"], 3)
    Path(record["sem_seg_file_name"]).unlink()
    with pytest.raises(FileNotFoundError) as error:
        evaluator.process([{"file_name": record["file_name"]}], [output])
    assert str(error.value) == (f"semantic label map {record['sem_seg_file_name']!r} (dataset "
                                f"entry of image {record['file_name']!r}) not found")


# ---------------------------------------------------------------- the evaluation loader


def eval_config(**overrides):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT = 48, 100, "RGB"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.merge_from_list([item for pair in overrides.items() for item in pair])
    return cfg


def test_inference_mapper_gives_detectron2s_image(tiny_semantic):
    """The model input is detectron2's DatasetMapper's; the label is left to the evaluator."""
    _, dataset_dicts = tiny_semantic
    cfg = eval_config()
    ours = InferenceDatasetMapper(cfg)(dataset_dicts[0])
    theirs = DatasetMapper(cfg, is_train=False)(dataset_dicts[0])
    assert ours["image"].shape == (3, 48, 64) and torch.equal(ours["image"], theirs["image"])
    assert (ours["height"], ours["width"]) == (24, 32)
    assert "sem_seg_file_name" not in ours and "sem_seg" not in ours
    assert "height" not in dataset_dicts[0]  # the caller's dict is untouched


def test_inference_mapper_names_a_truncated_image(tiny_semantic):
    _, dataset_dicts = tiny_semantic
    truncate(dataset_dicts[1]["file_name"])
    with pytest.raises(DataError, match=f"^cannot read image file '{dataset_dicts[1]['file_name']}': "
                                        "OSError: image file is truncated"):
        InferenceDatasetMapper(eval_config())(dataset_dicts[1])


def test_inference_mapper_names_an_image_of_another_size_than_its_entry(tiny_semantic):
    _, dataset_dicts = tiny_semantic
    record = dict(dataset_dicts[0], height=20, width=32)
    with pytest.raises(DataError) as error:
        InferenceDatasetMapper(eval_config())(record)
    assert str(error.value) == (f"image file {record['file_name']!r} is 32x24 (WxH) but its "
                                "dataset entry says 32x20")


def test_train_net_test_loader_names_a_truncated_image_from_a_worker(tiny_semantic):
    """train_net's evaluation loader reads through InferenceDatasetMapper; the error of a loader
    worker process arrives as the same DataError."""
    name, dataset_dicts = tiny_semantic
    truncate(dataset_dicts[2]["file_name"])
    loader = train_net.Trainer.build_test_loader(eval_config(**{"DATALOADER.NUM_WORKERS": 1}), name)
    with pytest.raises(DataError, match=f"cannot read image file '{dataset_dicts[2]['file_name']}'"):
        for _ in loader:
            pass


def test_train_net_uses_the_checked_evaluator(tiny_semantic):
    name, _ = tiny_semantic
    assert isinstance(train_net.Trainer.build_evaluator(eval_config(), name, "unused"),
                      CheckedSemSegEvaluator)


# ---------------------------------------------------------------- real CamVid labels


@pytest.mark.needs_shared
def test_camvid_val_perfect_predictions_score_100_and_a_stray_value_is_refused(tmp_path):
    """Three CamVid val frames (void 11): perfect predictions score 100 on the real labels; a
    stray 50 in one of them is refused, naming it."""
    camvid = shared_path("camvid")
    dataset_dicts = []
    for stem in ("0016E5_07959", "0016E5_07961", "0016E5_07963"):
        image = tmp_path / f"{stem}.jpg"
        label = tmp_path / f"{stem}.png"
        shutil.copy(camvid / "images" / "val" / f"{stem}.jpg", image)
        shutil.copy(camvid / "labels" / "val" / f"{stem}.png", label)
        dataset_dicts.append({"file_name": str(image), "sem_seg_file_name": str(label)})
    classes = [f"class_{i}" for i in range(11)]
    with registered_dataset(f"_test_eval_gt_camvid_{uuid.uuid4().hex}", dataset_dicts,
                            stuff_classes=classes, ignore_label=11) as name:
        outputs = perfect_outputs(dataset_dicts, num_classes=11)
        results = evaluate(name, dataset_dicts, outputs)
        present = [c for c in classes if not np.isnan(results[f"IoU-{c}"])]
        assert len(present) >= 8 and results["mIoU"] == 100 and results["pACC"] == 100

        label = np.asarray(Image.open(dataset_dicts[1]["sem_seg_file_name"])).copy()
        label[100:110, 200:210] = 50
        save_png(dataset_dicts[1]["sem_seg_file_name"], label)
        with pytest.raises(DataError, match=r"0016E5_07961\.png.* has values \[50\] outside the "
                                            r"class ids \[0, 11\) that are not the ignore label 11"):
            evaluate(name, dataset_dicts, outputs)
