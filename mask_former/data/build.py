"""The data loaders: training, with the dataset mapper named by INPUT.DATASET_MAPPER_NAME, and
evaluation, with InferenceDatasetMapper."""
import cv2
from detectron2.data import build_detection_test_loader, build_detection_train_loader

from ..errors import ConfigError
from .dataset_check import check_num_classes
from .gpu_augmentation import GPUAugmentedLoader, GPUSemanticAugmentation, SemanticDecodeMapper
from .packed_batches import pack_batch
from .dataset_mappers import (
    COCOInstanceLSJDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    DETRPanopticDatasetMapper,
    InferenceDatasetMapper,
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
    check_num_classes(cfg, test=False)
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPERS:
        raise ConfigError(f"INPUT.DATASET_MAPPER_NAME={name!r}; choose one of {sorted(DATASET_MAPPERS)}")
    check_num_classes(cfg)
    if cfg.DATALOADER.NUM_WORKERS > 0:
        # One OpenCV thread per worker: by default each worker process starts one per core, and
        # with as many workers as cores they oversubscribe the CPUs (one H200 machine, 16 workers
        # on 16 cores, the loader alone: 165 img/s, 310 with this; docs/benchmarks.md). The
        # workers inherit the setting from this process.
        cv2.setNumThreads(1)
    if cfg.INPUT.GPU_AUGMENTATION:
        if name != "mask_former_semantic":
            raise ConfigError(f"INPUT.GPU_AUGMENTATION supports INPUT.DATASET_MAPPER_NAME "
                             f"'mask_former_semantic' only, not {name!r}; set it False")
        loader = _packed_loader(cfg, SemanticDecodeMapper(cfg, True))
        return GPUAugmentedLoader(loader, GPUSemanticAugmentation(cfg))
    return _packed_loader(cfg, DATASET_MAPPERS[name](cfg, True))


def _packed_loader(cfg, mapper):
    """detectron2's training loader. Batches collated in the workers
    (DATALOADER.ASPECT_RATIO_GROUPING False) come as one block of shared memory each
    (packed_batches); with grouping, the workers send single images and the batches are formed
    here, as detectron2 does."""
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        return build_detection_train_loader(cfg, mapper=mapper)
    return build_detection_train_loader(cfg, mapper=mapper, collate_fn=pack_batch)


def build_test_loader(cfg, dataset_name: str):
    """detectron2's evaluation loader over one dataset, read by InferenceDatasetMapper (which
    names the file of an unreadable image)."""
    return build_detection_test_loader(cfg, dataset_name, mapper=InferenceDatasetMapper(cfg))
