"""Importing this package registers MaskFormer's datasets with detectron2's catalogs.

Added here: ADE20K-Full, ADE20K panoptic and instance, COCO panoptic with semantic label maps,
COCO-Stuff-10K, Mapillary Vistas (semantic and panoptic), CamVid and the embedded synthetic shapes.
ADE20K-150 semantic (`ade20k_sem_seg_{train,val}`), COCO instances and panoptic, and Cityscapes
(semantic, instance, panoptic) are detectron2's own built-ins. datasets/README.md gives the layouts
under $DETECTRON2_DATASETS.
A dataset folder of your own (register_custom.py, docs/custom_datasets.md) is registered by
load_config when the config sets DATASETS.CUSTOM_ROOT, not on import.
"""
from . import (  # noqa: F401
    register_ade20k_full,
    register_ade20k_instance,
    register_ade20k_panoptic,
    register_camvid,
    register_coco_panoptic_with_sem_seg,
    register_coco_stuff_10k,
    register_mapillary_vistas,
    register_mapillary_vistas_panoptic,
    register_synthetic_shapes,
)
