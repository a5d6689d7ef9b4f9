"""Mappers from detectron2 dataset dicts to MaskFormer's training and evaluation inputs."""
from .detr_panoptic_dataset_mapper import DETRPanopticDatasetMapper
from .inference_dataset_mapper import InferenceDatasetMapper
from .lsj_dataset_mappers import COCOInstanceLSJDatasetMapper, COCOPanopticLSJDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = [
    "COCOInstanceLSJDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
    "DETRPanopticDatasetMapper",
    "InferenceDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
]
