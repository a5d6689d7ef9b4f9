"""Panoptic quality of a semantic segmentation, every class a "stuff" category: the PQ that the
official MaskFormer reports next to mIoU for its semantic models.

In each image, the pixels of a class in the prediction (argmax of "sem_seg") form one predicted
segment, and the pixels of a class in the ground-truth label map one GT segment; pixels with the
ignore label are VOID. Segments are then scored as COCO panoptic segments are
(`panoptic_evaluation`):

- the predicted and the GT segment of a class match when their IoU is > 0.5 (exactly 0.5 is not a
  match), where the union leaves out the predicted pixels on VOID;
- an unmatched GT segment is a false negative; an unmatched predicted segment is a false positive
  unless more than half of its pixels lie on VOID;
- per class, PQ = sum(IoU of TPs) / (TP + FP/2 + FN/2), SQ = sum(IoU) / TP, RQ = TP / (TP + FP/2 +
  FN/2), summed over images; PQ, SQ and RQ average the classes with TP + FP + FN > 0.

All of a class's pixels form a single segment, so each class has at most one possible match per
image, and one bincount of (prediction, ground truth) pairs gives every count of an image.
"""
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
from tabulate import tabulate

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..data.dataset_check import DatasetConfigError
from ..data.io import describe_entry, read_semantic_label_map
from .panoptic_evaluation import (IGNORED_FRACTION, MATCH_IOU, CategoryStats,
                                  PanopticQualityStats)

__all__ = [
    "SemanticPQCounts",
    "SemanticPQEvaluator",
    "image_semantic_pq_counts",
    "semantic_panoptic_quality",
]

logger = logging.getLogger(__name__)


@dataclass
class SemanticPQCounts:
    """Per-class counts of semantic PQ: each of tp, fp, fn (int64) and iou (float64, the sum of
    the true positives' IoUs) is a (K,) array indexed by class id. Summed over images with `+=`,
    over workers with `merged`; pickles for comm.gather."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray
    num_images: int = 0

    @classmethod
    def zeros(cls, num_classes: int) -> "SemanticPQCounts":
        return cls(*(np.zeros(num_classes, np.int64) for _ in range(3)),
                   iou=np.zeros(num_classes, np.float64))

    def __iadd__(self, other: "SemanticPQCounts") -> "SemanticPQCounts":
        if len(other.tp) != len(self.tp):
            raise ValueError(f"counts of {len(other.tp)} classes added to counts of {len(self.tp)}")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        self.num_images += other.num_images
        return self

    @classmethod
    def merged(cls, parts: Iterable["SemanticPQCounts"], num_classes: int) -> "SemanticPQCounts":
        """The sum of several counts (e.g. one per worker), leaving them unchanged."""
        total = cls.zeros(num_classes)
        for part in parts:
            total += part
        return total

    def to_stats(self) -> PanopticQualityStats:
        """The same counts as panoptic stats, category id = class id (classes that occur only)."""
        stats = PanopticQualityStats()
        stats.num_images = self.num_images
        for k in np.flatnonzero(self.tp + self.fp + self.fn):
            stats.per_category[int(k)] = CategoryStats(
                tp=int(self.tp[k]), fp=int(self.fp[k]), fn=int(self.fn[k]), iou=float(self.iou[k]))
        return stats

    def summarize(self, class_names: Sequence[str]) -> Dict:
        """PanopticQualityStats.summarize with every class as stuff: {"All": {"pq", "sq", "rq",
        "n"}, "per_category": {class id: {"pq", "sq", "rq", "tp", "fp", "fn", "iou"}}}, as
        fractions ("Stuff" is "All"; "Things" is empty)."""
        return self.to_stats().summarize(semantic_categories(class_names))


def semantic_categories(class_names: Sequence[str]) -> Dict[int, Dict]:
    """{class id: {"isthing": False, "name"}}: the categories of semantic PQ."""
    return {k: {"isthing": False, "name": name} for k, name in enumerate(class_names)}


def image_semantic_pq_counts(prediction: np.ndarray, ground_truth: np.ndarray, num_classes: int,
                             ignore_label: Optional[int]) -> SemanticPQCounts:
    """The semantic PQ counts of one image.

    Args:
        prediction: (H, W) integer class ids in [0, num_classes), the argmax of the scores.
        ground_truth: (H, W) integer class ids in [0, num_classes) or `ignore_label` (VOID).
        num_classes: K.
        ignore_label: the VOID value of `ground_truth` (None: no VOID pixels).
    Returns:
        (K,) counts, num_images 1.
    """
    prediction, ground_truth = np.asarray(prediction), np.asarray(ground_truth)
    if prediction.shape != ground_truth.shape:
        raise ValueError(f"prediction of shape {prediction.shape} but ground truth of shape "
                         f"{ground_truth.shape}")
    k = num_classes
    pred = prediction.ravel().astype(np.int64)
    # VOID becomes class K: column K of the pair counts below.
    gt = ground_truth.ravel().astype(np.int64)
    if ignore_label is not None:
        gt = np.where(gt == ignore_label, k, gt)
    # Out-of-range ids would land silently in the cells of other pairs.
    for name, ids, high in (("prediction", pred, k), ("ground truth", gt, k + 1)):
        if ids.size and (ids.min() < 0 or ids.max() >= high):
            void = name == "ground truth" and ignore_label is not None
            raise ValueError(f"{name} has class ids outside [0, {num_classes})"
                             + (f" other than the ignore label {ignore_label}" if void else ""))
    # pairs[p, g]: pixels predicted p with ground truth g (g = K: VOID), (K, K + 1).
    pairs = np.bincount(pred * (k + 1) + gt, minlength=k * (k + 1)).reshape(k, k + 1)
    pred_area = pairs.sum(1)                 # (K,) including the pixels on VOID
    gt_area = pairs[:, :k].sum(0)            # (K,) VOID excluded by construction
    on_void = pairs[:, k]                    # (K,)
    intersection = np.diagonal(pairs)        # (K,): pairs[c, c]
    # The predicted pixels on VOID are not counted against the prediction (COCO panoptic).
    union = pred_area + gt_area - intersection - on_void
    iou = intersection / np.maximum(union, 1)
    in_gt, in_pred = gt_area > 0, pred_area > 0
    tp = in_gt & in_pred & (iou > MATCH_IOU)
    fn = in_gt & ~tp
    fp = in_pred & ~tp & (on_void / np.maximum(pred_area, 1) <= IGNORED_FRACTION)
    return SemanticPQCounts(tp=tp.astype(np.int64), fp=fp.astype(np.int64),
                            fn=fn.astype(np.int64), iou=np.where(tp, iou, 0.0), num_images=1)


def semantic_panoptic_quality(images: Iterable[Tuple[np.ndarray, np.ndarray]],
                              class_names: Sequence[str], ignore_label: Optional[int]) -> Dict:
    """Semantic PQ/SQ/RQ of a set of (prediction, ground truth) (H, W) label maps; the result is
    `SemanticPQCounts.summarize`'s (fractions)."""
    total = SemanticPQCounts.merged(
        (image_semantic_pq_counts(pred, gt, len(class_names), ignore_label)
         for pred, gt in images), len(class_names))
    return total.summarize(class_names)


class SemanticPQEvaluator(DatasetEvaluator):
    """PQ, SQ and RQ of a semantic segmentation model, every class a stuff category (see the
    module's docstring), on a registered dataset with semantic label maps.

    Dataset dicts need "file_name" and "sem_seg_file_name"; the metadata stuff_classes and
    ignore_label. The label maps are read and checked as CheckedSemSegEvaluator's are (a value
    that is neither a class nor the ignore label, or a size other than the prediction's, is a
    DataError naming the file). Each image is scored in process(), so only the (K,) counts are
    gathered across workers. Combine with CheckedSemSegEvaluator (DatasetEvaluators) for mIoU.

    Contains a synchronize call when distributed: call evaluate() from all workers.
    """

    def __init__(self, dataset_name: str, distributed: bool = True,
                 output_dir: Optional[str] = None):
        """
        Args:
            dataset_name: a registered dataset with semantic label maps.
            distributed: gather the counts of all workers in evaluate().
            output_dir: if given, the results are written there as semantic_pq.json: "pq",
                "sq", "rq" (fractions) and "n" of all classes, and per class also its counts.
        """
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        # Loading first: some registrations only complete their metadata when loaded.
        dataset_dicts = DatasetCatalog.get(dataset_name)
        without = [d for d in dataset_dicts if "sem_seg_file_name" not in d]
        if without:
            raise DatasetConfigError(
                f"Dataset {dataset_name!r} has no semantic label maps to score PQ against: "
                f"{len(without)} of its {len(dataset_dicts)} entries have no 'sem_seg_file_name' "
                f"(the first: {describe_entry(without[0])})")
        metadata = MetadataCatalog.get(dataset_name)
        missing = [key for key in ("stuff_classes", "ignore_label") if key not in metadata.as_dict()]
        if missing:
            raise DatasetConfigError(f"Dataset {dataset_name!r} has no {' or '.join(missing)} in "
                                     "its metadata, which semantic PQ needs")
        self._class_names = list(metadata.stuff_classes)
        self._ignore_label = metadata.ignore_label
        self._gt_by_file_name = {d["file_name"]: d for d in dataset_dicts}
        self.reset()

    def reset(self):
        self._counts = SemanticPQCounts.zeros(len(self._class_names))

    @property
    def counts(self) -> SemanticPQCounts:
        """The counts of the images this worker has processed since reset()."""
        return self._counts

    def process(self, inputs: Sequence[Dict], outputs: Sequence[Dict]) -> None:
        """inputs: model inputs with "file_name"; outputs: {"sem_seg": (K, H, W) scores}."""
        for input, output in zip(inputs, outputs):
            scores = output["sem_seg"]
            if scores.shape[0] != len(self._class_names):
                raise ValueError(f"sem_seg has scores of {scores.shape[0]} classes but "
                                 f"{self._dataset_name} has {len(self._class_names)}")
            prediction = scores.argmax(dim=0).cpu().numpy()
            record = self._gt_by_file_name.get(input.get("file_name"))
            if record is None:
                raise KeyError(f"No dataset dict of {self._dataset_name} has file_name "
                               f"{input.get('file_name')!r}")
            ground_truth = read_semantic_label_map(
                record["sem_seg_file_name"], input, prediction.shape, len(self._class_names),
                self._ignore_label)
            self._counts += image_semantic_pq_counts(prediction, ground_truth,
                                                     len(self._class_names), self._ignore_label)

    def evaluate(self):
        """{"sem_seg_pq": {"PQ", "SQ", "RQ" (in %), "PQ-NAME", "SQ-NAME", "RQ-NAME" of each class
        that occurs}}; None on workers other than the main one, {} without images."""
        parts = [self._counts]
        if self._distributed:
            comm.synchronize()
            parts = comm.gather(self._counts)
            if not comm.is_main_process():
                return None
        total = SemanticPQCounts.merged(parts, len(self._class_names))
        if total.num_images == 0:
            logger.warning(f"SemanticPQEvaluator on {self._dataset_name} got no images")
            return OrderedDict()
        summary = total.summarize(self._class_names)
        _log_results(summary, self._dataset_name)
        if self._output_dir:
            self._save(summary)
        results = {key.upper(): 100 * summary["All"][key] for key in ("pq", "sq", "rq")}
        for class_id, values in summary["per_category"].items():
            for key in ("pq", "sq", "rq"):
                results[f"{key.upper()}-{self._class_names[class_id]}"] = 100 * values[key]
        return OrderedDict({"sem_seg_pq": results})

    def _save(self, summary: Mapping) -> None:
        PathManager.mkdirs(self._output_dir)
        content = dict(summary["All"])
        content["per_class"] = {self._class_names[k]: values
                                for k, values in summary["per_category"].items()}
        with PathManager.open(os.path.join(self._output_dir, "semantic_pq.json"), "w") as f:
            json.dump(content, f, indent=1)


def _log_results(summary: Mapping, dataset_name: str) -> None:
    row = [100 * summary["All"][key] for key in ("pq", "sq", "rq")] + [summary["All"]["n"]]
    table = tabulate([row], headers=["PQ", "SQ", "RQ", "#classes"], tablefmt="pipe",
                     floatfmt=".3f", numalign="center")
    logger.info(f"Semantic PQ (every class as stuff) on {dataset_name}:\n" + table)
