"""Evaluation that detectron2 does not provide without extra packages: panoptic quality."""
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
    "PanopticQualityEvaluator",
    "PanopticQualityStats",
    "categories_from_metadata",
    "image_panoptic_stats",
    "panoptic_quality",
]
