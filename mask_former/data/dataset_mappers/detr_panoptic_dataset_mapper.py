"""DETR's COCO panoptic augmentation, as MaskFormer uses it for COCO panoptic training."""
import copy
import logging
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

from ..io import read_dataset_image, read_panoptic_png, rgb_to_id
from .mask_former_semantic_dataset_mapper import segment_instances

__all__ = ["DETRPanopticDatasetMapper"]


def build_transform_gen(cfg, is_train: bool) -> List[T.Augmentation]:
    """[RandomFlip, ResizeShortestEdge] for training; [ResizeShortestEdge] (test sizes) else."""
    if is_train:
        min_size, max_size = cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN
        sample_style = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    else:
        min_size, max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
        sample_style = "choice"
    if sample_style == "range" and len(min_size) != 2:
        raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING='range' needs 2 sizes in "
                         f"INPUT.MIN_SIZE_TRAIN, got {list(min_size)}")
    augs = [T.RandomFlip()] if is_train else []
    augs.append(T.ResizeShortestEdge(min_size, max_size, sample_style))
    return augs


class DETRPanopticDatasetMapper:
    """Maps a COCO-panoptic dataset dict to MaskFormer's input with DETR's augmentation.

    Training: horizontal flip, then with probability 1/2 (when `crop_gen` is given) resize to a
    short side of 400/500/600 and crop, then the final resize of `tfm_gens`. No padding: the model
    pads batches itself. Returns the dict with:
        "image": (3, H, W) uint8 tensor in `image_format`,
        "instances" (training only): one target per non-crowd segment, in "segments_info"
            order: gt_classes (N,) int64 (contiguous ids), gt_masks (N, H, W) bool.
    As the official mapper, no boxes: MaskFormer's losses use masks only.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, crop_gen: Optional[List[T.Augmentation]],
                 tfm_gens: List[T.Augmentation], image_format: str,
                 num_classes: Optional[int] = None):
        """
        Args:
            is_train: whether to read the panoptic annotation and build "instances".
            crop_gen: augmentations inserted before the last of `tfm_gens` on half of the
                images; None: never.
            tfm_gens: augmentations of every image; the last one is the final resize.
            image_format: a format of `detection_utils.read_image` ("RGB", "BGR", ...).
            num_classes: "category_id"s must lie in [0, num_classes); None skips that check.
        """
        self.is_train = is_train
        self.crop_gen = crop_gen
        self.tfm_gens = list(tfm_gens)
        self.img_format = image_format
        self.num_classes = num_classes
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] Augmentations used in "
            f"{'training' if is_train else 'inference'}: {self.tfm_gens}, crop: {self.crop_gen}"
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        crop_gen = None
        if cfg.INPUT.CROP.ENABLED and is_train:
            crop_gen = [
                T.ResizeShortestEdge([400, 500, 600], sample_style="choice"),
                T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
            ]
        num_classes = None
        if cfg.DATASETS.TRAIN:
            stuff_classes = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("stuff_classes")
            num_classes = len(stuff_classes) if stuff_classes is not None else None
        return {
            "is_train": is_train,
            "crop_gen": crop_gen,
            "tfm_gens": build_transform_gen(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": num_classes,
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's dict is reused every epoch
        image = read_dataset_image(dataset_dict, self.img_format)
        pan_seg = None
        if self.is_train:
            # read before augmenting so that a bad file fails before any random draw
            pan_seg = read_panoptic_png(dataset_dict, image.shape[:2], self.num_classes)

        augs = self.tfm_gens
        # the same random draws, in the same order, as the official mapper
        if self.crop_gen is not None and np.random.rand() <= 0.5:
            augs = self.tfm_gens[:-1] + self.crop_gen + self.tfm_gens[-1:]
        image, transforms = T.apply_transform_gens(augs, image)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        segment_ids = rgb_to_id(transforms.apply_segmentation(pan_seg))
        dataset_dict.pop("pan_seg_file_name")
        dataset_dict["instances"] = segment_instances(segment_ids, dataset_dict["segments_info"])
        return dataset_dict
