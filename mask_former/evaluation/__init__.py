"""Evaluation that detectron2 does not provide as MaskFormer needs it: panoptic quality without
panopticapi, mask AP of models whose classes span things and stuff, detectron2's semantic
metrics on checked ground truth, and the panoptic quality of a semantic segmentation."""
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
from .semantic_pq_evaluation import (
    SemanticPQCounts,
    SemanticPQEvaluator,
    image_semantic_pq_counts,
    semantic_panoptic_quality,
)

__all__ = [
    "CategoryStats",
    "CheckedSemSegEvaluator",
    "InstanceSegEvaluator",
    "PanopticQualityEvaluator",
    "PanopticQualityStats",
    "SemanticPQCounts",
    "SemanticPQEvaluator",
    "categories_from_metadata",
    "image_panoptic_stats",
    "image_semantic_pq_counts",
    "panoptic_quality",
    "semantic_panoptic_quality",
]
