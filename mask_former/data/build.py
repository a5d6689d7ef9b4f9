"""The training data loader, with the dataset mapper named by INPUT.DATASET_MAPPER_NAME."""
from detectron2.data import MetadataCatalog, build_detection_train_loader

from .dataset_mappers import (
    COCOInstanceLSJDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    DETRPanopticDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)

# INPUT.DATASET_MAPPER_NAME -> the training mapper (the official names)
DATASET_MAPPERS = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
    "detr_panoptic": DETRPanopticDatasetMapper,
    "coco_instance_lsj": COCOInstanceLSJDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticLSJDatasetMapper,
}


def build_train_loader(cfg):
    """detectron2's training loader over DATASETS.TRAIN, mapped by the configured mapper."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPERS:
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME={name!r}; choose one of {sorted(DATASET_MAPPERS)}")
    check_num_classes(cfg)
    return build_detection_train_loader(cfg, mapper=DATASET_MAPPERS[name](cfg, True))


def check_num_classes(cfg) -> None:
    """Fails before training when a training dataset has more classes than the model predicts.

    The classes are the metadata list the mapper's class ids index: `stuff_classes` (every class)
    for semantic and panoptic data, `thing_classes` for the instance mappers.
    """
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    key = getattr(DATASET_MAPPERS[cfg.INPUT.DATASET_MAPPER_NAME], "classes_key", "stuff_classes")
    for dataset in cfg.DATASETS.TRAIN:
        classes = MetadataCatalog.get(dataset).get(key, None)
        if classes is not None and len(classes) > num_classes:
            raise ValueError(
                f"Dataset {dataset!r} has {len(classes)} classes ({key}) but "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes}; set it to {len(classes)}."
            )
