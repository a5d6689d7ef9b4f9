"""Evaluation that detectron2 does not provide as MaskFormer needs it: panoptic quality without
panopticapi, mask AP of models whose classes span things and stuff."""
from .instance_evaluation import InstanceSegEvaluator
from .panoptic_evaluation import (
    CategoryStats,
    PanopticQualityEvaluator,
    PanopticQualityStats,
    categories_from_metadata,
    image_panoptic_stats,
    panoptic_quality,
)

__all__ = [
    "CategoryStats",
    "InstanceSegEvaluator",
    "PanopticQualityEvaluator",
    "PanopticQualityStats",
    "categories_from_metadata",
    "image_panoptic_stats",
    "panoptic_quality",
]
