"""Datasets (registered on import) and the dataset mappers MaskFormer trains with."""
from . import datasets
from .dataset_mappers import (
    DETRPanopticDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
