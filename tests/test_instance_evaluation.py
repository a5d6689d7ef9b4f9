"""Mask AP (InstanceSegEvaluator) and the evaluators train_net builds per dataset and model
output."""
import json
import logging
import os
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.evaluation import DatasetEvaluators
from detectron2.structures import BitMasks, Instances

from conftest import REPO_ROOT
from mask_former.data.synthetic_shapes import instances_json
from mask_former.config import load_config
from mask_former.errors import ConfigError
from mask_former.evaluation import InstanceSegEvaluator
from mask_former.evaluation.instance_evaluation import dense_thing_view

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402

PANOPTIC_VAL = "synthetic_shapes_panoptic_val"
INSTANCE_VAL = "synthetic_shapes_instance_val"


def ground_truth_outputs(dataset, class_of=lambda category: category, score=1.0):
    """(inputs, outputs) predicting the ground truth of every image of the synthetic val split."""
    root = os.path.dirname(os.path.dirname(MetadataCatalog.get(PANOPTIC_VAL).json_file))
    with open(instances_json(root, "val")) as f:
        coco = json.load(f)
    by_image = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    inputs, outputs = [], []
    for record in DatasetCatalog.get(dataset):
        annotations = by_image[record["image_id"]]
        masks = torch.from_numpy(np.stack(
            [mask_util.decode(a["segmentation"]) for a in annotations]).astype(bool))
        instances = Instances((128, 128))
        instances.pred_masks = masks
        instances.pred_boxes = BitMasks(masks).get_bounding_boxes()
        instances.scores = torch.full((len(annotations),), score)
        instances.pred_classes = torch.tensor([class_of(a["category_id"]) for a in annotations])
        inputs.append({"image_id": record["image_id"], "file_name": record["file_name"]})
        outputs.append({"instances": instances})
    return inputs, outputs


def evaluate(evaluator, inputs, outputs):
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()["segm"]


def test_perfect_predictions_on_the_panoptic_split_give_ap_100(tmp_path):
    """The model's classes are the 5 panoptic ones (things 2, 3, 4); stuff predictions are
    dropped."""
    evaluator = InstanceSegEvaluator(PANOPTIC_VAL, output_dir=str(tmp_path), distributed=False)
    assert not evaluator._use_fast_impl
    inputs, outputs = ground_truth_outputs(PANOPTIC_VAL)
    for output in outputs:  # a confident "sky" (stuff) over the whole image: not an instance
        instances = output["instances"]
        sky = Instances((128, 128), pred_masks=torch.ones((1, 128, 128), dtype=torch.bool),
                        scores=torch.ones(1), pred_classes=torch.zeros(1, dtype=torch.int64))
        sky.pred_boxes = BitMasks(sky.pred_masks).get_bounding_boxes()
        output["instances"] = Instances.cat([instances, sky])
    results = evaluate(evaluator, inputs, outputs)
    assert results["AP"] == pytest.approx(100.0)
    for key in ("AP-circle", "AP-square", "AP-triangle"):
        assert results[key] == pytest.approx(100.0), key


def test_wrong_classes_lose_their_ap(tmp_path):
    """Circles predicted as squares: circle AP 0, square AP below 100 (false positives)."""
    evaluator = InstanceSegEvaluator(PANOPTIC_VAL, output_dir=str(tmp_path), distributed=False)
    inputs, outputs = ground_truth_outputs(PANOPTIC_VAL, class_of=lambda c: 3 if c == 2 else c)
    results = evaluate(evaluator, inputs, outputs)
    assert results["AP-circle"] == 0.0
    assert results["AP-square"] < 100.0
    assert results["AP-triangle"] == pytest.approx(100.0)


def test_instance_split_is_converted_to_coco_by_detectron2(tmp_path):
    """No json_file: COCOEvaluator converts the dataset dicts (RLE annotations, contiguous ids
    0..2) with convert_to_coco_json; perfect predictions give AP 100."""
    assert "json_file" not in MetadataCatalog.get(INSTANCE_VAL).as_dict()
    coco = convert_to_coco_dict(INSTANCE_VAL)
    root = os.path.dirname(os.path.dirname(MetadataCatalog.get(PANOPTIC_VAL).json_file))
    with open(instances_json(root, "val")) as f:
        shipped = json.load(f)
    assert [c["id"] for c in coco["categories"]] == [2, 3, 4]  # back to the dataset ids
    assert len(coco["annotations"]) == len(shipped["annotations"])
    for converted, original in zip(coco["annotations"], shipped["annotations"]):
        assert converted["category_id"] == original["category_id"]
        assert converted["area"] == original["area"]
        assert converted["bbox"] == pytest.approx(original["bbox"])

    evaluator = InstanceSegEvaluator(INSTANCE_VAL, output_dir=str(tmp_path), distributed=False)
    inputs, outputs = ground_truth_outputs(INSTANCE_VAL, class_of=lambda c: c - 2)
    assert evaluate(evaluator, inputs, outputs)["AP"] == pytest.approx(100.0)
    assert (tmp_path / f"{INSTANCE_VAL}_coco_format.json").is_file()


def test_dense_view_of_sparse_thing_ids():
    """ADE20K panoptic style: things 7, 8, 10 of 12 classes, thing_classes listing all 12."""
    names = [f"class{i}" for i in range(12)]
    metadata = Metadata(name="x", json_file="x.json", thing_classes=names,
                        thing_dataset_id_to_contiguous_id={10: 10, 7: 7, 8: 8})
    to_dense, view = dense_thing_view(metadata)
    assert to_dense == {7: 0, 8: 1, 10: 2}
    assert view.thing_classes == ["class7", "class8", "class10"]
    assert view.thing_dataset_id_to_contiguous_id == {7: 0, 8: 1, 10: 2}
    assert view.json_file == "x.json"


def test_missing_instance_json_names_the_file_and_the_key(tmp_path):
    name = "_test_instance_evaluation_missing_json"
    missing = str(tmp_path / "instances.json")
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=missing, thing_classes=["a"])
    try:
        with pytest.raises(FileNotFoundError) as error:
            InstanceSegEvaluator(name, output_dir=str(tmp_path))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert str(error.value) == (
        f"Mask AP on {name!r} needs its COCO instance annotations {missing!r}, which do not "
        "exist: see datasets/README.md to prepare them, or set MODEL.MASK_FORMER.TEST.INSTANCE_ON "
        "False to evaluate without mask AP.")


def test_output_without_instances_is_refused(tmp_path):
    evaluator = InstanceSegEvaluator(PANOPTIC_VAL, output_dir=str(tmp_path), distributed=False)
    with pytest.raises(KeyError, match="set MODEL.MASK_FORMER.TEST.INSTANCE_ON True"):
        evaluator.process([{"image_id": "val_0000"}], [{"sem_seg": torch.zeros(5, 128, 128)}])


# ---------------------------------------------------------------- train_net's evaluators


def quickstart_cfg(*opts):
    return load_config(str(REPO_ROOT / "configs/quickstart/maskformer_tiny_shapes.yaml"), opts)


def test_panoptic_dataset_with_instances_gets_all_three_evaluators(tmp_path):
    cfg = quickstart_cfg("OUTPUT_DIR", str(tmp_path))
    assert train_net.evaluation_tasks(cfg, PANOPTIC_VAL) == ["sem_seg", "panoptic_seg", "instances"]
    evaluators = train_net.Trainer.build_evaluator(cfg, PANOPTIC_VAL)
    assert isinstance(evaluators, DatasetEvaluators)
    assert [type(e).__name__ for e in evaluators._evaluators] == [
        "CheckedSemSegEvaluator", "PanopticQualityEvaluator", "InstanceSegEvaluator"]


@pytest.mark.parametrize("opts, dataset, tasks", [
    (["MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"], PANOPTIC_VAL, ["sem_seg", "panoptic_seg"]),
    (["MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "False"], PANOPTIC_VAL, ["panoptic_seg", "instances"]),
    ([], INSTANCE_VAL, ["instances"]),
    ([], "synthetic_shapes_sem_seg_val", ["sem_seg"]),
    ([], "coco_2017_val_panoptic", ["panoptic_seg", "instances"]),
    ([], "coco_2017_val_panoptic_with_sem_seg", ["sem_seg", "panoptic_seg", "instances"]),
    ([], "ade20k_panoptic_val", ["sem_seg", "panoptic_seg", "instances"]),
    ([], "cityscapes_fine_instance_seg_val", ["instances"]),
    ([], "cityscapes_fine_panoptic_val", ["panoptic_seg"]),
    ([], "mapillary_vistas_panoptic_val", ["sem_seg", "panoptic_seg"]),
])
def test_evaluation_tasks(opts, dataset, tasks):
    assert train_net.evaluation_tasks(quickstart_cfg(*opts), dataset) == tasks


def test_nothing_to_evaluate_names_the_keys():
    cfg = quickstart_cfg("MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "False")
    with pytest.raises(ConfigError) as error:
        train_net.evaluation_tasks(cfg, "synthetic_shapes_sem_seg_val")
    assert str(error.value) == (
        "Nothing to evaluate on 'synthetic_shapes_sem_seg_val': it has sem_seg ground truth, "
        "which the model does not predict; set MODEL.MASK_FORMER.TEST.SEMANTIC_ON True")


def test_final_metrics_line(caplog):
    # the handler: train_net's logger setup (in other tests) stops propagation to caplog's
    logger = logging.getLogger("mask_former")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="mask_former"):
            train_net.log_final_metrics(
                {"sem_seg": {"mIoU": 91.234}, "panoptic_seg": {"PQ": 80.5}, "segm": {"AP": 70.126}},
                ["synthetic_shapes_panoptic_val"])
    finally:
        logger.removeHandler(caplog.handler)
    assert set(caplog.messages) == {
        "Final results on synthetic_shapes_panoptic_val: mIoU 91.23, PQ 80.50, AP 70.13"}
