"""MaskFormer's training mapper for instance segmentation (COCO-format "annotations"), and the
decoding of instance annotations that the large-scale-jittering instance mapper shares."""
import copy
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import Instances, polygons_to_bitmask

from ..io import DataError, describe_entry, pad_to_multiple, read_dataset_image
from .mask_former_semantic_dataset_mapper import IMAGE_PAD_VALUE, make_instances, train_metadata
from .training_mapper import TrainingDatasetMapper

__all__ = ["MaskFormerInstanceDatasetMapper"]


def decode_segmentation(segmentation, height: int, width: int, dataset_dict: Dict) -> np.ndarray:
    """A COCO "segmentation" (polygons, RLE or a (H, W) array) -> (height, width) uint8 0/1 mask.

    Polygons are [[x0, y0, x1, y1, ...], ...] in pixel coordinates; RLE is compressed
    ({"size", "counts": str or bytes}) or uncompressed ("counts": a list of run lengths).
    """
    if isinstance(segmentation, list):
        polygons = [np.asarray(polygon, dtype=np.float64) for polygon in segmentation]
        return polygons_to_bitmask(polygons, height, width).astype(np.uint8)
    if isinstance(segmentation, dict):
        if tuple(segmentation.get("size", ())) != (height, width):
            raise DataError(
                f"an RLE segmentation in the {describe_entry(dataset_dict)} has size "
                f"{segmentation.get('size')} but the image is {height}x{width} (HxW)")
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            segmentation = mask_util.frPyObjects(segmentation, height, width)
        return mask_util.decode(segmentation)
    if isinstance(segmentation, np.ndarray) and segmentation.shape == (height, width):
        return (segmentation != 0).astype(np.uint8)
    raise DataError(
        f"a segmentation in the {describe_entry(dataset_dict)} is neither polygons (a list), COCO "
        f"RLE (a dict) nor a {height}x{width} array: {type(segmentation).__name__} "
        f"{getattr(segmentation, 'shape', '')}".rstrip())


def annotation_targets(dataset_dict: Dict, transforms: T.TransformList,
                       num_classes: Optional[int]) -> Tuple[List[int], List[np.ndarray]]:
    """The classes and masks of an entry's non-crowd "annotations", after `transforms`.

    Each segmentation is rasterised at the entry's original size, then transformed as a
    segmentation map (nearest-neighbour resize), which needs no polygon clipping (shapely) and
    treats polygons, RLE and arrays alike; boundaries may differ from rasterising transformed
    polygons by a pixel. Returns ([class], [(H, W) bool mask]), (H, W) the augmented image's, in
    annotation order; masks may be empty (cropped away).
    """
    if "annotations" not in dataset_dict:
        raise DataError(f"no 'annotations' in the {describe_entry(dataset_dict)}; instance "
                         "segmentation needs COCO-style annotations")
    height, width = dataset_dict["height"], dataset_dict["width"]
    classes, masks = [], []
    for annotation in dataset_dict["annotations"]:
        if annotation.get("iscrowd", 0):
            continue
        if "segmentation" not in annotation:
            raise DataError(f"an annotation of the {describe_entry(dataset_dict)} has no "
                             "'segmentation'; MaskFormer trains on masks")
        category = int(annotation["category_id"])
        if num_classes is not None and not 0 <= category < num_classes:
            raise DataError(
                f"an annotation of the {describe_entry(dataset_dict)} has category_id "
                f"{category}, outside the contiguous class ids [0, {num_classes})")
        mask = decode_segmentation(annotation["segmentation"], height, width, dataset_dict)
        # == 1: padding (FixedSizeCrop pads segmentations with 255) belongs to no instance
        classes.append(category)
        masks.append(transforms.apply_segmentation(mask) == 1)
    return classes, masks


class MaskFormerInstanceDatasetMapper(TrainingDatasetMapper):
    """Maps an instance-segmentation dataset dict to MaskFormer's training input (training only),
    as the official Mask2Former's instance mapper (ADE20K and Cityscapes instance recipes).

    Reads "file_name" and "annotations" (each with "segmentation" as polygons, COCO RLE or a
    (H, W) array, a contiguous "category_id" and "iscrowd"; crowds are skipped). Augments (resize,
    optional crop, colour, flip), pads to a multiple of `size_divisibility` (image with 128, masks
    with 0) and returns the dict with:
        "image": (3, H, W) uint8 tensor in `image_format`,
        "instances": one target per non-crowd annotation, in annotation order: gt_classes (N,)
            int64, gt_masks (N, H, W) bool. As the official mapper, an instance cropped away keeps
            its (empty) mask.
    """

    # the metadata list that "category_id" indexes (train_net checks it against NUM_CLASSES)
    classes_key = "thing_classes"

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: List[T.Augmentation],
                 image_format: str, size_divisibility: int, num_classes: Optional[int] = None):
        """
        Args:
            is_train: must be True; evaluation uses detectron2's DatasetMapper.
            augmentations: applied in order to the image and the masks.
            image_format: a format of `detection_utils.read_image` ("RGB", "BGR", ...).
            size_divisibility: pad to a multiple of this; <= 0 disables padding.
            num_classes: "category_id"s must lie in [0, num_classes); None skips that check.
        """
        super().__init__(is_train, augmentations, image_format, num_classes)
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                     cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
        if cfg.INPUT.CROP.ENABLED:
            # a plain random crop: instance datasets have no label map for the category-area one
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        if cfg.INPUT.COLOR_AUG_SSD:
            augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
        augs.append(T.RandomFlip())
        classes = train_metadata(cfg, needs_ignore_label=False).get(cls.classes_key)
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": len(classes) if classes is not None else None,
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's dict is reused every epoch
        image = read_dataset_image(dataset_dict, self.img_format)
        image, transforms = T.apply_transform_gens(self.tfm_gens, image)
        classes, masks = annotation_targets(dataset_dict, transforms, self.num_classes)
        dataset_dict.pop("annotations")
        instances = make_instances(image.shape[:2], classes, masks)
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.size_divisibility > 0:
            image = pad_to_multiple(image, self.size_divisibility, IMAGE_PAD_VALUE)
            masks = pad_to_multiple(instances.gt_masks, self.size_divisibility, False)
            instances = Instances(tuple(image.shape[-2:]), gt_classes=instances.gt_classes,
                                  gt_masks=masks)
        dataset_dict["image"] = image
        dataset_dict["instances"] = instances
        return dataset_dict
