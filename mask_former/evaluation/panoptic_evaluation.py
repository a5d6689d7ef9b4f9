"""Panoptic quality (PQ, SQ, RQ) of Kirillov et al., "Panoptic Segmentation" (CVPR 2019).

The numbers are those of the COCO reference implementation (panopticapi's `pq_compute`), computed
here with numpy because panopticapi is not installable from a package registry:

- A predicted and a ground-truth segment of the same category match when their IoU is > 0.5 (an
  IoU of exactly 0.5 is not a match). Such matches are unique, so no assignment step is needed.
- Ground-truth id 0 is VOID: the pixels a prediction has on VOID are left out of its union.
- Crowd ground-truth segments are never matched and never false negatives. An unmatched prediction
  is not a false positive when more than half of its area lies on VOID or on crowd segments of its
  own category.
- Per category, PQ = sum(IoU of TPs) / (TP + FP/2 + FN/2), SQ = sum(IoU) / TP and
  RQ = TP / (TP + FP/2 + FN/2). The "All", "Things" and "Stuff" numbers average the categories
  with TP + FP + FN > 0.

Two deliberate differences, both on inputs panopticapi does not expect: when an image has several
crowd segments of one category, all of them count for the false-positive rule (panopticapi keeps
only the last); and an empty group (a dataset without stuff, say) averages to 0 with n = 0 instead
of raising ZeroDivisionError.

`image_panoptic_stats` gives one image's per-category counts, `PanopticQualityStats` sums them over
images and workers, and `panoptic_quality` runs both over a whole set of images.
`PanopticQualityEvaluator` is the detectron2 evaluator built on them.
"""
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tabulate import tabulate

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..data.io import file_error, read_panoptic_png, rgb_to_id

logger = logging.getLogger(__name__)

VOID = 0
# Ground-truth and predicted segments of one category match above this IoU (strictly).
MATCH_IOU = 0.5
# An unmatched prediction with more than this fraction of its area on VOID or crowd is ignored.
IGNORED_FRACTION = 0.5

# {category_id: {"isthing": bool, "name": str}}
Categories = Mapping[int, Mapping]


@dataclass
class CategoryStats:
    """Counts of one category; `iou` is the sum of the true positives' IoUs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def __iadd__(self, other: "CategoryStats") -> "CategoryStats":
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        return self

    def quality(self) -> Dict[str, float]:
        """PQ, SQ and RQ of this category as fractions (0 where undefined)."""
        denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
        if denominator == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        return {
            "pq": self.iou / denominator,
            "sq": self.iou / self.tp if self.tp else 0.0,
            "rq": self.tp / denominator,
        }


class PanopticQualityStats:
    """Per-category counts and the number of images they cover.

    Summed over images with `+=`, and over workers with `merged` (it pickles for comm.gather).
    """

    def __init__(self):
        self.per_category: Dict[int, CategoryStats] = {}
        self.num_images = 0

    def category(self, category_id: int) -> CategoryStats:
        """The counts of `category_id`, created empty on first use."""
        return self.per_category.setdefault(int(category_id), CategoryStats())

    def __iadd__(self, other: "PanopticQualityStats") -> "PanopticQualityStats":
        for category_id, stats in other.per_category.items():
            total = self.category(category_id)
            total += stats
        self.num_images += other.num_images
        return self

    @classmethod
    def merged(cls, parts: Iterable["PanopticQualityStats"]) -> "PanopticQualityStats":
        """The sum of several stats (e.g. one per worker), leaving them unchanged."""
        total = cls()
        for part in parts:
            total += part
        return total

    def average(self, categories: Categories, isthing: Optional[bool] = None) -> Dict[str, float]:
        """Mean PQ/SQ/RQ over the categories of a group (None: all) that occur, and their number."""
        totals = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        n = 0
        for category_id, info in categories.items():
            if isthing is not None and bool(info["isthing"]) != isthing:
                continue
            stats = self.per_category.get(category_id)
            if stats is None or stats.tp + stats.fp + stats.fn == 0:
                continue
            n += 1
            for key, value in stats.quality().items():
                totals[key] += value
        result = {key: value / n if n else 0.0 for key, value in totals.items()}
        result["n"] = n
        return result

    def summarize(self, categories: Categories) -> Dict:
        """{"All", "Things", "Stuff": {"pq", "sq", "rq", "n"}, "per_category": {id: {...}}}.

        Values are fractions. "per_category" holds the categories of `categories` with
        TP + FP + FN > 0: their "pq", "sq", "rq" and raw "tp", "fp", "fn", "iou".
        """
        per_category = {}
        for category_id in categories:
            stats = self.per_category.get(category_id)
            if stats is None or stats.tp + stats.fp + stats.fn == 0:
                continue
            per_category[category_id] = dict(
                stats.quality(), tp=stats.tp, fp=stats.fp, fn=stats.fn, iou=stats.iou
            )
        return {
            "All": self.average(categories),
            "Things": self.average(categories, isthing=True),
            "Stuff": self.average(categories, isthing=False),
            "per_category": per_category,
        }


def _intersections(gt_ids: np.ndarray, pred_ids: np.ndarray):
    """Pixel counts of every (GT id, predicted id) pair present in the image.

    Returns (gt_values, pred_values, counts) with counts[i, j] the number of pixels of GT id
    gt_values[i] and predicted id pred_values[j]. Ids are made compact first, so any id range
    (the 24-bit RGB ids, label_divisor encodings) gives a small dense matrix.
    """
    gt_values, gt_index = np.unique(gt_ids, return_inverse=True)
    pred_values, pred_index = np.unique(pred_ids, return_inverse=True)
    pair_index = gt_index.ravel() * len(pred_values) + pred_index.ravel()
    counts = np.bincount(pair_index, minlength=len(gt_values) * len(pred_values))
    return gt_values, pred_values, counts.reshape(len(gt_values), len(pred_values))


def _check_predictions(pred_values: np.ndarray, pred_segments: Sequence[Mapping],
                       categories: Categories) -> None:
    """The sanity checks of panopticapi: the id map and segments_info describe the same segments."""
    listed = {int(segment["id"]) for segment in pred_segments}
    present = {int(value) for value in pred_values}
    unlisted = sorted(present - listed - {VOID})
    if unlisted:
        raise ValueError(
            f"Predicted segment ids {unlisted} are in the id map but not in segments_info"
        )
    missing = sorted(listed - present)
    if missing:
        raise ValueError(
            f"Predicted segment ids {missing} are in segments_info but not in the id map"
        )
    for segment in pred_segments:
        if segment["category_id"] not in categories:
            raise ValueError(f"Predicted segment {segment['id']} has unknown category_id "
                             f"{segment['category_id']}")


def image_panoptic_stats(gt_ids: np.ndarray, gt_segments: Sequence[Mapping],
                         pred_ids: np.ndarray, pred_segments: Sequence[Mapping],
                         categories: Categories) -> PanopticQualityStats:
    """Per-category TP/FP/FN counts and TP IoU sums of one image.

    gt_ids / pred_ids: (H, W) integer segment-id maps, 0 = VOID. gt_segments: [{"id",
    "category_id", "iscrowd" (default 0)}]; pred_segments: [{"id", "category_id"}]. Other keys
    (e.g. "isthing") are ignored: thing/stuff comes from `categories` {category_id: {"isthing",
    "name"}}. Ground-truth ids that segments_info does not list are neither segments nor VOID, as
    in panopticapi.
    """
    gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"GT id map of shape {gt_ids.shape} but prediction of shape {pred_ids.shape}"
        )
    for segment in gt_segments:
        if segment["category_id"] not in categories:
            raise ValueError(
                f"GT segment {segment['id']} has unknown category_id {segment['category_id']}"
            )
    gt_values, pred_values, counts = _intersections(gt_ids, pred_ids)
    _check_predictions(pred_values, pred_segments, categories)
    gt_row = {int(value): i for i, value in enumerate(gt_values)}
    pred_column = {int(value): j for j, value in enumerate(pred_values)}

    # A listed GT segment absent from the map has area 0: an all-zero row (never matched).
    padded = np.concatenate([counts, np.zeros((1, counts.shape[1]), counts.dtype)])
    rows = np.array([gt_row.get(int(s["id"]), len(counts)) for s in gt_segments], dtype=np.int64)
    columns = np.array([pred_column[int(s["id"])] for s in pred_segments], dtype=np.int64)
    intersection = padded[np.ix_(rows, columns)]  # (num GT segments, num predicted segments)
    gt_area = padded.sum(1)[rows]
    pred_area = counts.sum(0)[columns]
    void = padded[gt_row[VOID]][columns] if VOID in gt_row else np.zeros_like(pred_area)

    gt_category = np.array([s["category_id"] for s in gt_segments], dtype=np.int64)
    pred_category = np.array([s["category_id"] for s in pred_segments], dtype=np.int64)
    gt_crowd = np.array([bool(s.get("iscrowd", 0)) for s in gt_segments], dtype=bool)
    same_category = gt_category[:, None] == pred_category[None, :]

    # Pixels of the prediction on VOID are not counted against it.
    union = gt_area[:, None] + pred_area[None, :] - intersection - void[None, :]
    iou = intersection / np.maximum(union, 1)
    matches = same_category & ~gt_crowd[:, None] & (iou > MATCH_IOU)
    gt_matched, pred_matched = matches.any(1), matches.any(0)

    stats = PanopticQualityStats()
    stats.num_images = 1
    for g, p in zip(*np.nonzero(matches)):
        category = stats.category(gt_category[g])
        category.tp += 1
        category.iou += float(iou[g, p])
    for g in np.nonzero(~gt_matched & ~gt_crowd)[0]:
        stats.category(gt_category[g]).fn += 1
    # The part of each prediction on VOID or on crowd segments of its own category.
    on_crowd = (intersection * (same_category & gt_crowd[:, None])).sum(0)
    ignored = (void + on_crowd) / pred_area
    for p in np.nonzero(~pred_matched & (ignored <= IGNORED_FRACTION))[0]:
        stats.category(pred_category[p]).fp += 1
    return stats


def panoptic_quality(images: Iterable[Tuple[np.ndarray, Sequence[Mapping], np.ndarray,
                                            Sequence[Mapping]]],
                     categories: Categories) -> Dict:
    """PQ/SQ/RQ of a set of images, each (gt_ids, gt_segments, pred_ids, pred_segments).

    See `image_panoptic_stats` for the inputs and `PanopticQualityStats.summarize` for the result.
    """
    stats = PanopticQualityStats.merged(
        image_panoptic_stats(*image, categories=categories) for image in images
    )
    return stats.summarize(categories)


def categories_from_metadata(metadata) -> Dict[int, Dict]:
    """{dataset category id: {"isthing", "name"}} of a detectron2 panoptic registration.

    A dataset id in both maps is a thing (some registrations list every class as stuff, for the
    semantic evaluator). Names index thing_classes / stuff_classes by contiguous id.
    """
    things = metadata.thing_dataset_id_to_contiguous_id
    stuff = metadata.stuff_dataset_id_to_contiguous_id
    thing_classes = metadata.get("thing_classes", None)
    stuff_classes = metadata.get("stuff_classes", None)
    categories = {}
    for dataset_id, contiguous_id in stuff.items():
        name = stuff_classes[contiguous_id] if stuff_classes else str(dataset_id)
        categories[dataset_id] = {"isthing": False, "name": name}
    for dataset_id, contiguous_id in things.items():
        name = thing_classes[contiguous_id] if thing_classes else str(dataset_id)
        categories[dataset_id] = {"isthing": True, "name": name}
    return categories


class PanopticQualityEvaluator(DatasetEvaluator):
    """PQ/SQ/RQ of a detectron2-registered panoptic dataset, in the manner of COCOPanopticEvaluator.

    Dataset dicts need "pan_seg_file_name" (RGB-encoded ids) and "segments_info" with contiguous
    "category_id" and "iscrowd"; the metadata needs thing/stuff_dataset_id_to_contiguous_id.
    Model outputs are matched to dataset dicts by "file_name", else by "image_id". Each image is
    scored in process(), so only the small per-category counts are gathered across workers.
    Categories are compared by dataset id, which stays unambiguous where thing and stuff
    contiguous ids overlap (detectron2's "separated" registrations).

    Contains a synchronize call when distributed: call evaluate() from all workers.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None,
                 distributed: bool = True):
        """
        Args:
            dataset_name: a registered panoptic dataset.
            output_dir: if given, the per-category results are written there as
                panoptic_quality.json.
            distributed: gather the counts of all workers in evaluate().
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        # Loading first: some registrations only complete their metadata when loaded.
        dataset_dicts = DatasetCatalog.get(dataset_name)
        self._metadata = MetadataCatalog.get(dataset_name)
        self._categories = categories_from_metadata(self._metadata)
        self._thing_to_dataset = {
            v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()
        }
        self._stuff_to_dataset = {
            v: k for k, v in self._metadata.stuff_dataset_id_to_contiguous_id.items()
        }
        self._gt_by_file_name = {d["file_name"]: d for d in dataset_dicts if "file_name" in d}
        self._gt_by_image_id = {d["image_id"]: d for d in dataset_dicts if "image_id" in d}
        self.reset()

    def reset(self):
        self._stats = PanopticQualityStats()

    @property
    def stats(self) -> PanopticQualityStats:
        """The counts of the images this worker has processed since reset()."""
        return self._stats

    def _dataset_category_id(self, category_id: int, isthing: bool,
                             record: Optional[Mapping] = None) -> int:
        """The dataset id of a contiguous category id: of a GT segment of `record` (an unknown id
        is then a DataError naming its panoptic PNG) or else of a predicted segment."""
        table = self._thing_to_dataset if isthing else self._stuff_to_dataset
        if category_id not in table:
            kind = "thing" if isthing else "stuff"
            problem = (f"contiguous {kind} category id {category_id} is not in "
                       f"{self._dataset_name}'s {kind}_dataset_id_to_contiguous_id")
            if record is not None:
                raise file_error("panoptic PNG", record["pan_seg_file_name"], record,
                                 f"has a segment whose {problem}")
            raise ValueError(f"A predicted segment's {problem}")
        return table[category_id]

    def _ground_truth(self, input: Mapping,
                      prediction_size: Sequence[int]) -> Tuple[np.ndarray, List[Dict]]:
        """The GT id map and segments_info (dataset category ids) of a model input, whose
        prediction is of `prediction_size` (H, W)."""
        record = self._gt_by_file_name.get(input.get("file_name"))
        if record is None:
            record = self._gt_by_image_id.get(input.get("image_id"))
        if record is None:
            raise KeyError(
                f"No dataset dict of {self._dataset_name} has file_name {input.get('file_name')!r} "
                f"or image_id {input.get('image_id')!r}"
            )
        # contiguous category ids are checked below, against the dataset's maps
        gt_ids = rgb_to_id(read_panoptic_png(record, prediction_size, num_classes=None))
        thing_ids = set(self._thing_to_dataset)
        segments = []
        for segment in record["segments_info"]:
            isthing = segment.get("isthing")
            if isthing is None:
                isthing = segment["category_id"] in thing_ids
            segments.append({
                "id": segment["id"],
                "category_id": self._dataset_category_id(segment["category_id"], isthing, record),
                "iscrowd": segment.get("iscrowd", 0),
            })
        return gt_ids, segments

    def _prediction(self, panoptic_seg) -> Tuple[np.ndarray, List[Dict]]:
        """The predicted id map (0 = VOID) and segments_info (dataset category ids)."""
        id_map, segments_info = panoptic_seg
        if hasattr(id_map, "cpu"):
            id_map = id_map.cpu().numpy()
        id_map = np.asarray(id_map, dtype=np.int64)
        if segments_info is None:
            # detectron2's convention: ids are category * label_divisor + instance with -1 for
            # VOID, so shift by one to make VOID 0.
            label_divisor = self._metadata.get("label_divisor", None)
            if label_divisor is None:
                raise ValueError(
                    f"segments_info is None but {self._dataset_name} has no label_divisor metadata"
                )
            thing_ids = set(self._thing_to_dataset)
            segments_info = []
            for label in np.unique(id_map):
                if label == -1:
                    continue
                category_id = int(label) // label_divisor
                segments_info.append({"id": int(label) + 1, "category_id": category_id,
                                      "isthing": category_id in thing_ids})
            id_map = id_map + 1
        segments = []
        for segment in segments_info:
            category_id = segment["category_id"]
            # Without "isthing", the model gave dataset ids already (as in detectron2).
            if segment.get("isthing") is not None:
                category_id = self._dataset_category_id(category_id, segment["isthing"])
            segments.append({"id": segment["id"], "category_id": category_id})
        return id_map, segments

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            if "panoptic_seg" not in output:
                raise KeyError(
                    "The model output has no 'panoptic_seg' (for MaskFormer, set "
                    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON True)"
                )
            pred_ids, pred_segments = self._prediction(output["panoptic_seg"])
            gt_ids, gt_segments = self._ground_truth(input, pred_ids.shape)
            self._stats += image_panoptic_stats(
                gt_ids, gt_segments, pred_ids, pred_segments, self._categories
            )

    def evaluate(self):
        stats = [self._stats]
        if self._distributed:
            comm.synchronize()
            stats = comm.gather(self._stats)
            if not comm.is_main_process():
                return None
        stats = PanopticQualityStats.merged(stats)
        if stats.num_images == 0:
            logger.warning(f"PanopticQualityEvaluator on {self._dataset_name} got no images")
            return OrderedDict()
        summary = stats.summarize(self._categories)
        _log_results(summary, self._dataset_name)
        if self._output_dir:
            self._save(summary)

        res = {}
        for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for key in ("pq", "sq", "rq"):
                res[key.upper() + suffix] = 100 * summary[group][key]
        return OrderedDict({"panoptic_seg": res})

    def _save(self, summary: Dict) -> None:
        PathManager.mkdirs(self._output_dir)
        per_category = {
            str(category_id): dict(values, name=self._categories[category_id]["name"],
                                   isthing=self._categories[category_id]["isthing"])
            for category_id, values in summary["per_category"].items()
        }
        content = {key: summary[key] for key in ("All", "Things", "Stuff")}
        content["per_category"] = per_category
        path = os.path.join(self._output_dir, "panoptic_quality.json")
        with PathManager.open(path, "w") as f:
            json.dump(content, f, indent=1)


def _log_results(summary: Dict, dataset_name: str) -> None:
    headers = ["", "PQ", "SQ", "RQ", "#categories"]
    rows = [
        [group] + [100 * summary[group][key] for key in ("pq", "sq", "rq")] + [summary[group]["n"]]
        for group in ("All", "Things", "Stuff")
    ]
    table = tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".3f", stralign="center",
                     numalign="center")
    logger.info(f"Panoptic evaluation results on {dataset_name}:\n" + table)
