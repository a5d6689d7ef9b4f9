"""Mask2Former's large-scale-jittering (LSJ) training mappers of its COCO recipes:
`coco_instance_lsj` (COCO instance annotations) and `coco_panoptic_lsj` (COCO panoptic PNGs)."""
import copy
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from .mask_former_instance_dataset_mapper import annotation_targets
from ..io import read_dataset_image, read_panoptic_png, rgb_to_id
from .mask_former_semantic_dataset_mapper import make_instances, segment_instances, train_metadata
from .training_mapper import TrainingDatasetMapper

__all__ = ["COCOInstanceLSJDatasetMapper", "COCOPanopticLSJDatasetMapper",
           "build_lsj_augmentations"]

RANDOM_FLIPS = ("none", "horizontal", "vertical")


def build_lsj_augmentations(cfg) -> List[T.Augmentation]:
    """[flip,] resize by a random scale, fixed-size crop and pad, as the official LSJ mappers.

    The image is resized to fit INPUT.IMAGE_SIZE x INPUT.IMAGE_SIZE times a scale drawn uniformly
    from [INPUT.MIN_SCALE, INPUT.MAX_SCALE] (aspect ratio kept), then randomly cropped to at most
    IMAGE_SIZE x IMAGE_SIZE and padded to exactly that (image with 128, at the bottom and right);
    INPUT.RANDOM_FLIP ("horizontal", "vertical" or "none") flips first.
    """
    flip = cfg.INPUT.RANDOM_FLIP
    if flip not in RANDOM_FLIPS:
        raise ValueError(f"INPUT.RANDOM_FLIP={flip!r}; choose one of {list(RANDOM_FLIPS)}")
    if not 0 < cfg.INPUT.MIN_SCALE <= cfg.INPUT.MAX_SCALE:
        raise ValueError(f"INPUT.MIN_SCALE={cfg.INPUT.MIN_SCALE} and INPUT.MAX_SCALE="
                         f"{cfg.INPUT.MAX_SCALE}: need 0 < MIN_SCALE <= MAX_SCALE")
    size = cfg.INPUT.IMAGE_SIZE
    augs = []
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    augs += [
        T.ResizeScale(min_scale=cfg.INPUT.MIN_SCALE, max_scale=cfg.INPUT.MAX_SCALE,
                      target_height=size, target_width=size),
        T.FixedSizeCrop(crop_size=(size, size)),
    ]
    return augs


class _LSJDatasetMapper(TrainingDatasetMapper):
    """Reading, augmenting and converting the image; subclasses add the targets."""

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: List[T.Augmentation],
                 image_format: str, num_classes: Optional[int] = None):
        """
        Args:
            is_train: must be True; evaluation uses detectron2's DatasetMapper.
            augmentations: applied in order to the image and its annotations (see
                build_lsj_augmentations); the last one must give every image one size.
            image_format: a format of `detection_utils.read_image` ("RGB", "BGR", ...).
            num_classes: category ids must lie in [0, num_classes); None skips that check.
        """
        super().__init__(is_train, augmentations, image_format, num_classes)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        classes = train_metadata(cfg, needs_ignore_label=False).get(cls.classes_key)
        return {
            "is_train": is_train,
            "augmentations": build_lsj_augmentations(cfg),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": len(classes) if classes is not None else None,
        }

    def _augment(self, dataset_dict: Dict, image: np.ndarray) -> T.TransformList:
        """Augments `image`, stores it as dataset_dict["image"] (3, H, W) uint8; the transforms."""
        image, transforms = T.apply_transform_gens(self.tfm_gens, image)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return transforms


class COCOInstanceLSJDatasetMapper(_LSJDatasetMapper):
    """Maps a COCO instance dataset dict to MaskFormer's training input with large-scale jitter
    (Mask2Former's COCO instance recipe).

    Reads "file_name" and "annotations" (polygons, COCO RLE or arrays; contiguous "category_id";
    crowds skipped). Returns the dict with:
        "image": (3, S, S) uint8 tensor, S = INPUT.IMAGE_SIZE,
        "instances": the non-crowd annotations whose mask survives the crop, in annotation order
            (empty ones dropped, as the official's filter_empty_instances): gt_classes (N,) int64,
            gt_masks (N, S, S) bool.
    """

    # the metadata list that "category_id" indexes (train_net checks it against NUM_CLASSES)
    classes_key = "thing_classes"

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's dict is reused every epoch
        image = read_dataset_image(dataset_dict, self.img_format)
        transforms = self._augment(dataset_dict, image)
        classes, masks = annotation_targets(dataset_dict, transforms, self.num_classes)
        dataset_dict.pop("annotations")
        kept = [(c, m) for c, m in zip(classes, masks) if m.any()]
        dataset_dict["instances"] = make_instances(
            dataset_dict["image"].shape[-2:], [c for c, _ in kept], [m for _, m in kept])
        return dataset_dict


class COCOPanopticLSJDatasetMapper(_LSJDatasetMapper):
    """Maps a COCO-panoptic dataset dict to MaskFormer's training input with large-scale jitter
    (Mask2Former's COCO panoptic recipe).

    Reads "pan_seg_file_name" (RGB-encoded segment ids) and "segments_info" (contiguous
    "category_id", "iscrowd"). Returns the dict with:
        "image": (3, S, S) uint8 tensor, S = INPUT.IMAGE_SIZE,
        "instances": one target per non-crowd segment, in "segments_info" order: gt_classes (N,)
            int64, gt_masks (N, S, S) bool (a segment cropped away has an empty mask, as in the
            official mapper; the padding belongs to no segment).
    """

    classes_key = "stuff_classes"  # every class, things and stuff

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's dict is reused every epoch
        image = read_dataset_image(dataset_dict, self.img_format)
        # read before augmenting so that a bad file fails before any random draw
        pan_seg = read_panoptic_png(dataset_dict, image.shape[:2], self.num_classes)
        transforms = self._augment(dataset_dict, image)
        # the crop pads segmentations with 255: id 0xFFFFFF, no segment's
        segment_ids = rgb_to_id(transforms.apply_segmentation(pan_seg))
        dataset_dict.pop("pan_seg_file_name")
        dataset_dict["instances"] = segment_instances(segment_ids, dataset_dict["segments_info"])
        return dataset_dict
