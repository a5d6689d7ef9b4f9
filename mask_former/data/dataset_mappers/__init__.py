"""Mappers from detectron2 dataset dicts to MaskFormer's training inputs."""
from .detr_panoptic_dataset_mapper import DETRPanopticDatasetMapper
from .lsj_dataset_mappers import COCOInstanceLSJDatasetMapper, COCOPanopticLSJDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = [
    "COCOInstanceLSJDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
    "DETRPanopticDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
]
