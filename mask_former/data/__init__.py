"""Datasets (registered on import), the dataset mappers and loaders MaskFormer trains and evaluates
with, the reading and checking of dataset files (io) and the checks of whole datasets."""
from . import datasets
from .build import DATASET_MAPPERS, build_test_loader, build_train_loader
from .dataset_mappers import (
    COCOInstanceLSJDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    DETRPanopticDatasetMapper,
    InferenceDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
