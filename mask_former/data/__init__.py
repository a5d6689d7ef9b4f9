"""Datasets (registered on import) and the dataset mappers MaskFormer trains with."""
from . import datasets
from .build import DATASET_MAPPERS, build_train_loader
from .dataset_mappers import (
    COCOInstanceLSJDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    DETRPanopticDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
