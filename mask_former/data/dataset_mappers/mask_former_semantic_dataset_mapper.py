"""MaskFormer's training mapper for semantic segmentation, and the target building and
augmentations that MaskFormer's panoptic mapper shares with it. Files are read and checked by
mask_former.data.io."""
import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import Instances

from ..dataset_check import DatasetConfigError, require_registered
from ..io import entry_error, pad_to_multiple, read_dataset_image, read_semantic_label_map
from .training_mapper import TrainingDatasetMapper

__all__ = ["MaskFormerSemanticDatasetMapper"]

# Value of padded image pixels, as the official mapper (mid-grey before normalisation).
IMAGE_PAD_VALUE = 128


def make_instances(image_shape: Sequence[int], classes: Sequence[int],
                   masks: List[np.ndarray]) -> Instances:
    """Instances with gt_classes (N,) int64 and gt_masks (N, H, W) bool, one per (class, mask)."""
    instances = Instances(tuple(image_shape))
    instances.gt_classes = torch.tensor(np.asarray(classes, dtype=np.int64), dtype=torch.int64)
    if masks:
        instances.gt_masks = torch.from_numpy(np.stack(masks).astype(bool))
    else:
        # every pixel ignored: no target, which the criterion handles as "no object" everywhere
        instances.gt_masks = torch.zeros((0, *image_shape), dtype=torch.bool)
    return instances


def segment_instances(segment_ids: np.ndarray, segments_info: List[Dict]) -> Instances:
    """(H, W) int64 segment ids -> one target per non-crowd segment, in `segments_info` order."""
    kept = [s for s in segments_info if not s["iscrowd"]]
    return make_instances(segment_ids.shape, [s["category_id"] for s in kept],
                          [segment_ids == s["id"] for s in kept])


def build_semantic_augmentations(cfg, ignore_label: int) -> List[T.Augmentation]:
    """Resize, optional category-area-constrained crop and SSD colour jitter, horizontal flip."""
    augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                 cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    if cfg.INPUT.CROP.ENABLED:
        # The official mapper passes MODEL.SEM_SEG_HEAD.IGNORE_VALUE; the ignore label of the
        # label maps is what the crop must leave out of its area counts, and the two differ
        # whenever a dataset's void id is not 255.
        augs.append(T.RandomCrop_CategoryAreaConstraint(
            cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
            ignore_label,
        ))
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    augs.append(T.RandomFlip())
    return augs


def train_metadata(cfg, needs_ignore_label: bool = True):
    """Metadata of the first training dataset, which the mappers assume all training sets share.

    The semantic and panoptic mappers fill unlabelled pixels with its ignore_label; the instance
    mappers do not need one (COCO's instance registrations have none).
    """
    if not cfg.DATASETS.TRAIN:
        raise ValueError("cfg.DATASETS.TRAIN is empty; the dataset mappers read the ignore label "
                         "and classes from the first training dataset's metadata")
    name = cfg.DATASETS.TRAIN[0]
    metadata = MetadataCatalog.get(name)
    if needs_ignore_label and metadata.get("ignore_label", None) is None:
        require_registered(name, "DATASETS.TRAIN")  # the likelier cause
        raise DatasetConfigError(f"Dataset {name!r} (DATASETS.TRAIN) has no ignore_label in its "
                                 "metadata, which the mappers need")
    return metadata


class MaskFormerSemanticDatasetMapper(TrainingDatasetMapper):
    """Maps a semantic-segmentation dataset dict to MaskFormer's training input (training only).

    Reads "file_name" and "sem_seg_file_name", applies the augmentations to both, pads them to a
    multiple of `size_divisibility` (image with 128, labels with the ignore label) and returns the
    dict with:
        "image": (3, H, W) uint8 tensor in `image_format`,
        "sem_seg": (H, W) int64 class ids,
        "instances": Instances with one target per class present, in increasing class id order
            (ignore label excluded): gt_classes (N,) int64, gt_masks (N, H, W) bool.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: List[T.Augmentation],
                 image_format: str, ignore_label: int, size_divisibility: int,
                 num_classes: Optional[int] = None):
        """
        Args:
            is_train: must be True; evaluation uses InferenceDatasetMapper.
            augmentations: applied in order to the image and its label maps.
            image_format: a format of `detection_utils.read_image` ("RGB", "BGR", ...).
            ignore_label: void id of the label maps; padding gets it too.
            size_divisibility: pad to a multiple of this; <= 0 disables padding.
            num_classes: label values must lie in [0, num_classes) or be `ignore_label`;
                None skips that check.
        """
        super().__init__(is_train, augmentations, image_format, num_classes)
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        meta = train_metadata(cfg)
        ignore_label = meta.ignore_label
        stuff_classes = meta.get("stuff_classes")
        return {
            "is_train": is_train,
            "augmentations": build_semantic_augmentations(cfg, ignore_label),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": len(stuff_classes) if stuff_classes is not None else None,
        }

    def read(self, dataset_dict: Dict):
        """A copy of the entry (without "sem_seg_file_name"), its checked image (H, W, 3) and its
        label map as `_read_label_map` gives it."""
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's dict is reused every epoch
        image = read_dataset_image(dataset_dict, self.img_format)
        if "sem_seg_file_name" not in dataset_dict:
            raise entry_error(dataset_dict, "has no 'sem_seg_file_name'")
        if "annotations" in dataset_dict:
            raise entry_error(dataset_dict, "has 'annotations'; for semantic segmentation it "
                              "should have only a label map ('sem_seg_file_name')")
        sem_seg = self._read_label_map(dataset_dict.pop("sem_seg_file_name"), dataset_dict, image)
        return dataset_dict, image, sem_seg

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict, image, sem_seg = self.read(dataset_dict)
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        T.apply_augmentations(self.tfm_gens, aug_input)
        image_tensor, sem_seg_tensor = self._pad(aug_input.image, aug_input.sem_seg)

        dataset_dict["image"] = image_tensor
        dataset_dict["sem_seg"] = sem_seg_tensor
        dataset_dict["instances"] = self._semantic_instances(sem_seg_tensor)
        return dataset_dict

    def _read_label_map(self, path: str, dataset_dict: Dict, image: np.ndarray) -> np.ndarray:
        """The checked label map of `image` (H, W, 3), as (H, W) float64.

        float64 because detectron2's resize has no integer path other than uint8 (and would resize
        uint8 maps with PIL, a different nearest-neighbour sampling than for other dtypes); it
        holds every uint16/int32 id exactly, as in the official mapper.
        """
        label = read_semantic_label_map(path, dataset_dict, image.shape[:2], self.num_classes,
                                        self.ignore_label)
        return label.astype(np.float64)

    def _pad(self, image: np.ndarray, sem_seg: Optional[np.ndarray]):
        """(H, W, 3) image, (H, W) labels or None -> (3, H', W') uint8, (H', W') int64 or None."""
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            sem_seg = torch.as_tensor(sem_seg.astype(np.int64))
        if self.size_divisibility > 0:
            image = pad_to_multiple(image, self.size_divisibility, IMAGE_PAD_VALUE)
            if sem_seg is not None:
                sem_seg = pad_to_multiple(sem_seg, self.size_divisibility, self.ignore_label)
        return image, sem_seg

    def _semantic_instances(self, sem_seg: torch.Tensor) -> Instances:
        """(H, W) int64 class ids -> one target per class present, ignore label excluded."""
        sem_seg = sem_seg.numpy()
        classes = np.unique(sem_seg)
        classes = classes[classes != self.ignore_label]
        return make_instances(sem_seg.shape, classes, [sem_seg == c for c in classes])
