"""MaskFormer as a detectron2 project. Importing it registers every component and dataset.

The names below are those the official package (facebookresearch/MaskFormer) exports, so that a
training script written for it runs unchanged with this package in its place.
"""
from . import data, modeling
from .config import add_mask_former_config
from .data.dataset_mappers import (
    DETRPanopticDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
from .mask_former_model import MaskFormer
from .test_time_augmentation import SemanticSegmentorWithTTA

__all__ = [
    "add_mask_former_config",
    "DETRPanopticDatasetMapper",
    "MaskFormer",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "SemanticSegmentorWithTTA",
    "data",
    "modeling",
]
