"""The training data loader, with the dataset mapper named by INPUT.DATASET_MAPPER_NAME."""
from detectron2.data import MetadataCatalog, build_detection_train_loader

from .dataset_mappers import (
    DETRPanopticDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)

DATASET_MAPPERS = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "detr_panoptic": DETRPanopticDatasetMapper,
}


def build_train_loader(cfg):
    """detectron2's training loader over DATASETS.TRAIN, mapped by the configured mapper."""
    check_num_classes(cfg)
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPERS:
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME={name!r}; choose one of {sorted(DATASET_MAPPERS)}")
    return build_detection_train_loader(cfg, mapper=DATASET_MAPPERS[name](cfg, True))


def check_num_classes(cfg) -> None:
    """Fails before training when a training dataset has more classes than the model predicts."""
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for dataset in cfg.DATASETS.TRAIN:
        classes = getattr(MetadataCatalog.get(dataset), "stuff_classes", None)
        if classes is not None and len(classes) > num_classes:
            raise ValueError(
                f"Dataset {dataset!r} has {len(classes)} classes but MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                f"is {num_classes}; set it to {len(classes)}."
            )
