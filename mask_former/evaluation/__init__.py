"""Evaluation that detectron2 does not provide as MaskFormer needs it: panoptic quality without
panopticapi, mask AP of models whose classes span things and stuff, and detectron2's semantic
metrics on checked ground truth."""
from .instance_evaluation import InstanceSegEvaluator
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
    "InstanceSegEvaluator",
    "PanopticQualityEvaluator",
    "PanopticQualityStats",
    "categories_from_metadata",
    "image_panoptic_stats",
    "panoptic_quality",
]
