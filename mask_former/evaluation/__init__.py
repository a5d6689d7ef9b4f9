"""Evaluation: panoptic quality (which detectron2 does not provide without panopticapi), and
detectron2's semantic metrics on checked ground truth."""
from .panoptic_evaluation import (
    CategoryStats,
    PanopticQualityEvaluator,
    PanopticQualityStats,
    categories_from_metadata,
    image_panoptic_stats,
    panoptic_quality,
)
from .sem_seg_evaluation import CheckedSemSegEvaluator

__all__ = [
    "CategoryStats",
    "CheckedSemSegEvaluator",
    "PanopticQualityEvaluator",
    "PanopticQualityStats",
    "categories_from_metadata",
    "image_panoptic_stats",
    "panoptic_quality",
]
