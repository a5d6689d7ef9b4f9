"""Semantic PQ (every class as stuff): hand-computed cases of the metric, agreement with the
panoptic implementation, SemanticPQEvaluator on files, and tools/evaluate_pq_for_semantic_segmentation.py
end to end on 8 images of the quick start's synthetic dataset."""
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from conftest import REPO_ROOT
from helpers import load_script, register_first, registered_dataset, save_png, write_semantic_dataset
from mask_former.data.dataset_check import DatasetConfigError
from mask_former.data.io import DataError
from mask_former.evaluation import (SemanticPQEvaluator, image_panoptic_stats,
                                    image_semantic_pq_counts, semantic_panoptic_quality)
from mask_former.evaluation import semantic_pq_evaluation
from mask_former.weights import HOW_TO_GET_WEIGHTS
from tiny_models import QUICKSTART_CONFIG, save_quickstart_weights

V = 255  # the ignore label
TOOL = REPO_ROOT / "tools" / "evaluate_pq_for_semantic_segmentation.py"


def quality(images, num_classes, ignore_label=V):
    """{"pq", "sq", "rq", "n"} of [(prediction, ground truth)], as fractions."""
    names = [f"class{k}" for k in range(num_classes)]
    images = [(np.array(pred), np.array(gt)) for pred, gt in images]
    return semantic_panoptic_quality(images, names, ignore_label)["All"]


def counts(pred, gt, num_classes, ignore_label=V):
    """(tp, fp, fn) lists of one image."""
    c = image_semantic_pq_counts(np.array(pred), np.array(gt), num_classes, ignore_label)
    return c.tp.tolist(), c.fp.tolist(), c.fn.tolist()


# ---------------------------------------------------------------- the metric, by hand


def test_perfect_prediction_scores_100_whatever_it_predicts_on_void():
    gt = [[0, 0, 1, 1],
          [2, 2, 1, 1],
          [V, V, V, V]]
    # The VOID row is predicted as class 0, 1 and 3 (3 is in no ground truth: all its pixels
    # are on VOID, so it is no false positive).
    pred = [[0, 0, 1, 1],
            [2, 2, 1, 1],
            [0, 1, 3, 3]]
    result = quality([(pred, gt)], num_classes=4)
    assert (result["pq"], result["sq"], result["rq"], result["n"]) == (1.0, 1.0, 1.0, 3)


def test_hand_computed_partial_case_over_two_images():
    # Image 1, K = 4 (class 3 is in no ground truth), VOID = V:
    gt1 = [[0, 0, 0, 1, 1, 1],
           [0, 0, 0, 1, 1, 1],
           [0, 0, 0, 2, 2, 2],
           [V, V, V, 2, 2, 2]]
    pred1 = [[0, 0, 0, 1, 1, 1],
             [0, 0, 1, 1, 1, 1],
             [0, 0, 0, 3, 3, 2],
             [0, 0, 0, 3, 3, 3]]
    # class 0: GT area 9; predicted 11 pixels, 3 of them on VOID; intersection 8.
    #          union = 11 + 9 - 8 - 3 (VOID left out) = 9, IoU 8/9 > 0.5: TP.
    # class 1: GT 6, predicted 7, intersection 6, union 7: IoU 6/7, TP.
    # class 2: GT 6, predicted 1, intersection 1, union 6: IoU 1/6, no match: FN and FP.
    # class 3: predicted 5 pixels, none on VOID, not in the GT: FP.
    assert counts(pred1, gt1, 4) == ([1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0])
    # Image 2: class 2 predicted perfectly: TP with IoU 1.
    gt2 = pred2 = [[2, 2], [2, 2]]
    # Summed over the images: class 0: TP 1 (IoU 8/9); class 1: TP 1 (6/7);
    # class 2: TP 1 (IoU 1), FP 1, FN 1; class 3: FP 1.
    #   PQ per class = IoU sum / (TP + FP/2 + FN/2): 8/9, 6/7, 1/2, 0
    #   SQ = IoU sum / TP:                           8/9, 6/7, 1,   0
    #   RQ = TP / (TP + FP/2 + FN/2):                1,   1,   1/2, 0
    # averaged over the 4 classes that occur:
    #   PQ = (8/9 + 6/7 + 1/2) / 4 = 0.5615..., SQ = (8/9 + 6/7 + 1) / 4 = 0.6865..., RQ = 0.625
    result = quality([(pred1, gt1), (pred2, gt2)], num_classes=4)
    assert result["n"] == 4
    assert result["pq"] == pytest.approx((8 / 9 + 6 / 7 + 1 / 2) / 4)
    assert result["sq"] == pytest.approx((8 / 9 + 6 / 7 + 1) / 4)
    assert result["rq"] == pytest.approx(0.625)


def test_ignore_label_pixels_are_left_out_of_the_union():
    # Class 0: GT 2 pixels, predicted 5, of which 3 on VOID: union 5 + 2 - 2 - 3 = 2, IoU 1.
    # Counting the VOID pixels it would be 2/5, no match.
    gt = [[0, 0, V, V, V]]
    pred = [[0, 0, 0, 0, 0]]
    assert counts(pred, gt, 2) == ([1, 0], [0, 0], [0, 0])
    assert quality([(pred, gt)], 2)["pq"] == 1.0


def test_prediction_more_than_half_on_void_is_not_a_false_positive_half_is():
    # Class 1: 3 of its 4 pixels on VOID: ignored. Class 0: IoU 4/4 (its VOID pixel left out).
    assert counts([[0, 0, 0, 0, 1, 1, 1, 0]], [[0, 0, 0, 0, V, V, V, V]], 2) == \
        ([1, 0], [0, 0], [0, 0])
    # Class 1: 2 of its 4 pixels on VOID, exactly half: a false positive.
    # Class 0: GT 6, predicted 4, IoU 4/6: TP.
    gt = [[0, 0, 0, 0, 0, 0, V, V]]
    pred = [[0, 0, 0, 0, 1, 1, 1, 1]]
    assert counts(pred, gt, 2) == ([1, 0], [0, 1], [0, 0])
    assert quality([(pred, gt)], 2)["pq"] == pytest.approx((4 / 6 + 0) / 2)


def test_class_only_in_the_prediction_is_a_false_positive():
    gt = np.zeros((4, 4), np.uint8)
    pred = gt.copy()
    pred[0, 0] = 1
    # class 0: IoU 15/16, TP; class 1: FP.
    assert counts(pred, gt, 3) == ([1, 0, 0], [0, 1, 0], [0, 0, 0])
    result = quality([(pred, gt)], 3)
    assert result["n"] == 2  # class 2 occurs nowhere: left out of the averages
    assert result["pq"] == pytest.approx(15 / 16 / 2)
    assert result["sq"] == pytest.approx(15 / 16 / 2)
    assert result["rq"] == 0.5


def test_class_only_in_the_ground_truth_is_a_false_negative():
    gt = np.zeros((4, 4), np.uint8)
    gt[0, 0] = 1
    pred = np.zeros((4, 4), np.uint8)
    # class 0: predicted 16, GT 15, IoU 15/16, TP; class 1: FN.
    assert counts(pred, gt, 2) == ([1, 0], [0, 0], [0, 1])
    result = quality([(pred, gt)], 2)
    assert (result["n"], result["rq"]) == (2, 0.5)
    assert result["pq"] == pytest.approx(15 / 16 / 2)


def test_iou_of_exactly_one_half_is_not_a_match():
    gt = [[0, 0, 1, 1]]
    pred = [[0, 1, 1, 1]]
    # class 0: intersection 1, union 2: IoU 0.5, no match: FN and FP.
    # class 1: intersection 2, union 3: IoU 2/3, TP.
    assert counts(pred, gt, 2) == ([0, 1], [1, 0], [1, 0])
    assert quality([(pred, gt)], 2)["pq"] == pytest.approx((0 + 2 / 3) / 2)


def test_out_of_range_ids_are_refused():
    with pytest.raises(ValueError, match="prediction has class ids outside"):
        image_semantic_pq_counts(np.array([[0, 2]]), np.array([[0, 1]]), 2, V)
    with pytest.raises(ValueError, match="ground truth has class ids outside"):
        image_semantic_pq_counts(np.array([[0, 1]]), np.array([[0, 7]]), 2, V)


def test_matches_the_panoptic_implementation_on_random_images():
    """Each class one segment (id = class + 1, VOID 0): the COCO-panoptic counts of
    image_panoptic_stats, segment by segment, must be the bincount's."""
    rng = np.random.default_rng(0)
    num_classes = 6
    categories = {k: {"isthing": False, "name": str(k)} for k in range(num_classes)}
    for _ in range(30):
        gt = rng.integers(0, num_classes, (12, 16))
        # blocks of classes, so that some IoUs land either side of 0.5
        gt = np.repeat(np.repeat(gt[::4, ::4], 4, 0), 4, 1)
        gt[rng.random(gt.shape) < 0.15] = V
        pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, num_classes, gt.shape),
                        np.where(gt == V, 0, gt))
        gt_ids = np.where(gt == V, 0, gt + 1)
        gt_segments = [{"id": k + 1, "category_id": k} for k in np.unique(gt[gt != V])]
        pred_segments = [{"id": k + 1, "category_id": k} for k in np.unique(pred)]
        expected = image_panoptic_stats(gt_ids, gt_segments, pred + 1, pred_segments, categories)
        got = image_semantic_pq_counts(pred, gt, num_classes, V).to_stats()
        assert set(got.per_category) == set(expected.per_category)
        for k, stats in expected.per_category.items():
            other = got.per_category[k]
            assert (other.tp, other.fp, other.fn) == (stats.tp, stats.fp, stats.fn)
            assert other.iou == pytest.approx(stats.iou)


# ---------------------------------------------------------------- the evaluator, on files

CLASSES = ["a", "b", "c"]


def tiny_labels():
    """Three 24x32 label maps of the 3 classes, with VOID rows."""
    labels = []
    for index in range(3):
        label = np.full((24, 32), index, np.uint8)
        label[:8] = (index + 1) % 3
        label[-2:] = V
        labels.append(label)
    return labels


@pytest.fixture
def tiny_semantic(tmp_path):
    """A registered 3-image semantic dataset: (name, dataset dicts, label maps)."""
    labels = tiny_labels()
    dataset_dicts = write_semantic_dataset(tmp_path, labels)
    name = f"_test_semantic_pq_{uuid.uuid4().hex}"
    with registered_dataset(name, dataset_dicts, stuff_classes=CLASSES, ignore_label=V):
        yield name, dataset_dicts, labels


def scores(prediction: np.ndarray) -> dict:
    """{"sem_seg": (K, H, W) scores} whose argmax is `prediction`."""
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(prediction.astype(np.int64)), 3)
    return {"sem_seg": one_hot.permute(2, 0, 1).float()}


def inputs_outputs(dataset_dicts, labels, predictions=None):
    predictions = predictions or [np.where(label == V, 0, label) for label in labels]
    return ([{"file_name": d["file_name"]} for d in dataset_dicts],
            [scores(prediction) for prediction in predictions])


def test_evaluator_scores_perfect_predictions_100_and_writes_its_json(tiny_semantic, tmp_path):
    name, dataset_dicts, labels = tiny_semantic
    evaluator = SemanticPQEvaluator(name, distributed=False, output_dir=str(tmp_path / "out"))
    evaluator.process(*inputs_outputs(dataset_dicts, labels))
    results = evaluator.evaluate()["sem_seg_pq"]
    assert (results["PQ"], results["SQ"], results["RQ"]) == (100, 100, 100)
    assert [results[f"PQ-{c}"] for c in CLASSES] == [100, 100, 100]
    saved = json.loads((tmp_path / "out" / "semantic_pq.json").read_text())
    # each class is in two of the images (tiny_labels), one segment each
    assert saved["n"] == 3 and saved["per_class"]["b"]["tp"] == 2


def test_evaluators_of_two_workers_merge_to_one(tiny_semantic, monkeypatch):
    name, dataset_dicts, labels = tiny_semantic
    # image 1 all class 0: classes 0 and 1 of it become FP/FN
    predictions = [np.where(label == V, 0, label) for label in labels]
    predictions[1] = np.zeros_like(predictions[1])
    inputs, outputs = inputs_outputs(dataset_dicts, labels, predictions)
    single = SemanticPQEvaluator(name, distributed=False)
    single.process(inputs, outputs)
    expected = single.evaluate()["sem_seg_pq"]
    assert expected["PQ"] < 100

    worker0, worker1 = SemanticPQEvaluator(name), SemanticPQEvaluator(name)
    worker0.process(inputs[0::2], outputs[0::2])
    worker1.process(inputs[1::2], outputs[1::2])
    monkeypatch.setattr(semantic_pq_evaluation.comm, "gather",
                        lambda data, dst=0, group=None: [data, worker1.counts])
    assert worker0.evaluate()["sem_seg_pq"] == pytest.approx(expected)


def test_evaluator_refuses_a_stray_label_value_naming_the_file(tiny_semantic):
    name, dataset_dicts, labels = tiny_semantic
    bad = labels[0].copy()
    bad[0, 0] = 7
    save_png(dataset_dicts[0]["sem_seg_file_name"], bad)
    evaluator = SemanticPQEvaluator(name, distributed=False)
    inputs, outputs = inputs_outputs(dataset_dicts[:1], labels[:1])
    with pytest.raises(DataError, match=r"has values \[7\] outside the class ids \[0, 3\)") as error:
        evaluator.process(inputs, outputs)
    assert dataset_dicts[0]["sem_seg_file_name"] in str(error.value)


def test_dataset_without_label_maps_is_refused(tiny_semantic):
    _, dataset_dicts, _ = tiny_semantic
    entries = [{"file_name": d["file_name"]} for d in dataset_dicts]
    with registered_dataset(f"_test_semantic_pq_{uuid.uuid4().hex}", entries,
                            stuff_classes=CLASSES, ignore_label=V) as name:
        with pytest.raises(DatasetConfigError, match="3 of its 3 entries have no 'sem_seg_file_name'"):
            SemanticPQEvaluator(name)


# ---------------------------------------------------------------- the tool

# The first 8 images of the quick start's semantic validation set.
VAL_SUBSET = register_first("synthetic_shapes_sem_seg_val", 8)

tool = load_script(TOOL)


def tool_argv(weights, output_dir, *extra):
    return ["--config-file", str(QUICKSTART_CONFIG), "--dataset", VAL_SUBSET, *extra,
            "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(output_dir),
            "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"]


def test_tool_writes_pq_sq_rq_and_miou(tmp_path, capsys):
    weights = save_quickstart_weights(tmp_path / "untrained.pth")
    assert tool.main(tool_argv(weights, tmp_path / "out", "--per-class")) == 0
    out = capsys.readouterr().out
    assert "| dataset" in out and "PQ" in out and "mIoU" in out
    assert f"Per class on {VAL_SUBSET}" in out
    results = json.loads((tmp_path / "out" / tool.RESULTS_FILE).read_text())["datasets"][VAL_SUBSET]
    for key in ("PQ", "SQ", "RQ", "mIoU"):
        assert 0 <= results[key] <= 100, (key, results[key])
    assert results["num_images"] == 8
    assert 1 <= results["num_classes"] <= 5
    assert list(results["per_class"]) == MetadataCatalog.get(VAL_SUBSET).stuff_classes
    for values in results["per_class"].values():
        assert all(v is None or 0 <= v <= 100 for v in values.values())


def test_tool_refuses_weights_of_another_model_in_one_line(tmp_path, capsys):
    weights = save_quickstart_weights(tmp_path / "six.pth", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6")
    assert tool.main(tool_argv(weights, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(tool.PROG)]
    assert len(lines) == 1 and "does not fit the model of this config" in lines[0]
    assert not (tmp_path / "out" / tool.RESULTS_FILE).exists()


def test_missing_weights_are_one_line_without_traceback(tmp_path):
    """As a script: the error line is all of stderr (and nothing is written)."""
    missing = tmp_path / "no_such_model.pth"
    completed = subprocess.run(
        [sys.executable, str(TOOL), *tool_argv(missing, tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        f"{tool.PROG}: error: MODEL.WEIGHTS={missing}: no such file. "
        + HOW_TO_GET_WEIGHTS]
    assert not (tmp_path / "out").exists()
