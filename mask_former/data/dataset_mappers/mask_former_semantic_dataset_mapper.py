"""MaskFormer's training mapper for semantic segmentation, and the reading and checking of
annotation files that all of MaskFormer's mappers share.

Every file error names the file and the image of its dataset entry, since a data loader worker
otherwise reports only a decoder's message ("image file is truncated") with no way to find the
bad sample among thousands.
"""
import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import Instances

from .training_mapper import TrainingDatasetMapper

__all__ = ["MaskFormerSemanticDatasetMapper"]

# Value of padded image pixels, as the official mapper (mid-grey before normalisation).
IMAGE_PAD_VALUE = 128
# At most this many offending label values are listed in an error message.
_MAX_LISTED_VALUES = 10


def describe_entry(dataset_dict: Dict) -> str:
    """The phrase "dataset entry of image PATH", for error messages."""
    return f"dataset entry of image {dataset_dict.get('file_name')!r}"


def _located(path: str, dataset_dict: Dict) -> str:
    """`path`, with the image of its dataset entry unless it is that image."""
    if path == dataset_dict.get("file_name"):
        return repr(path)
    return f"{path!r} ({describe_entry(dataset_dict)})"


def read_file(path: str, dataset_dict: Dict, what: str,
              image_format: Optional[str] = None) -> np.ndarray:
    """Reads an image file with detectron2's reader (EXIF orientation applied).

    Returns (H, W, C) or (H, W), as `detection_utils.read_image`. A missing file raises
    FileNotFoundError, an unreadable one ValueError; both name `path` (a `what`) and the image of
    `dataset_dict`.
    """
    try:
        return utils.read_image(path, format=image_format)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} {_located(path, dataset_dict)} not found") from e
    except Exception as e:
        # PIL reports corrupt files through many exception types (OSError, SyntaxError,
        # zlib.error, ...); all of them mean the same thing here.
        raise ValueError(
            f"cannot read {what} {_located(path, dataset_dict)}: {type(e).__name__}: {e}"
        ) from e


def read_dataset_image(dataset_dict: Dict, image_format: str) -> np.ndarray:
    """The image of a dataset entry, (H, W, 3) uint8, checked against its "height"/"width"."""
    if "file_name" not in dataset_dict:
        raise ValueError(f"dataset entry has no 'file_name': {dataset_dict}")
    image = read_file(dataset_dict["file_name"], dataset_dict, "image file", image_format)
    utils.check_image_size(dataset_dict, image)
    return image


def check_same_size(image: np.ndarray, label: np.ndarray, label_path: str, dataset_dict: Dict,
                    what: str) -> None:
    """Raises ValueError naming both files unless `label` (H, W, ...) is as large as `image`."""
    if label.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"{what} {label_path!r} is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
            f"{dataset_dict['file_name']!r} is {image.shape[1]}x{image.shape[0]}"
        )


def _listed(values: Sequence[int]) -> str:
    values = [int(v) for v in values]
    extra = len(values) - _MAX_LISTED_VALUES
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED_VALUES])
    return f"[{shown}{f', ... ({extra} more)' if extra > 0 else ''}]"


def read_semantic_label_map(path: str, dataset_dict: Dict, image: np.ndarray,
                            num_classes: Optional[int], ignore_label: int) -> np.ndarray:
    """Reads and checks a label map of class ids; returns it as (H, W) float64.

    float64 because detectron2's resize has no integer path other than uint8 (and would resize
    uint8 maps with PIL, a different nearest-neighbour sampling than for other dtypes); it holds
    every uint16/int32 id exactly, as in the official mapper. Values must lie in
    [0, num_classes) or equal `ignore_label`; `num_classes=None` skips that check.
    """
    label = read_file(path, dataset_dict, "semantic label map")
    if label.ndim != 2 or label.dtype.kind not in "ui":
        raise ValueError(
            f"semantic label map {path!r} ({describe_entry(dataset_dict)}) is not a single-channel integer "
            f"image: shape {label.shape}, dtype {label.dtype}"
        )
    check_same_size(image, label, path, dataset_dict, "semantic label map")
    if num_classes is not None:
        values = np.unique(label)
        bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
        if bad.size:
            raise ValueError(
                f"semantic label map {path!r} ({describe_entry(dataset_dict)}) has values {_listed(bad)} "
                f"outside the class ids [0, {num_classes}) that are not the ignore label "
                f"{ignore_label}"
            )
    return label.astype(np.float64)


def read_panoptic_png(dataset_dict: Dict, image: np.ndarray,
                      num_classes: Optional[int]) -> np.ndarray:
    """Reads the entry's "pan_seg_file_name" (RGB-encoded segment ids), checks it and the
    categories of its "segments_info" (contiguous ids in [0, num_classes); None skips that).

    Returns (H, W, 3) uint8; `rgb_to_id` decodes it after the geometric transforms, which would
    lose large ids if applied to them as floats.
    """
    if "pan_seg_file_name" not in dataset_dict:
        raise ValueError(f"no 'pan_seg_file_name' in the {describe_entry(dataset_dict)}")
    path = dataset_dict["pan_seg_file_name"]
    if "segments_info" not in dataset_dict:
        raise ValueError(f"no 'segments_info' for panoptic PNG {path!r} ({describe_entry(dataset_dict)})")
    pan_seg = read_file(path, dataset_dict, "panoptic PNG", "RGB")
    check_same_size(image, pan_seg, path, dataset_dict, "panoptic PNG")
    if num_classes is not None:
        categories = sorted({s["category_id"] for s in dataset_dict["segments_info"]})
        bad = [c for c in categories if not 0 <= c < num_classes]
        if bad:
            raise ValueError(
                f"segments_info of panoptic PNG {path!r} ({describe_entry(dataset_dict)}) has category ids "
                f"{_listed(bad)} outside the contiguous class ids [0, {num_classes})"
            )
    return pan_seg


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 COCO panoptic encoding -> (H, W) int64 ids, id = R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def pad_to_multiple(tensor: torch.Tensor, divisibility: int, value: float) -> torch.Tensor:
    """Pads the last two dims (H, W) at the bottom and right up to multiples of `divisibility`."""
    height, width = tensor.shape[-2:]
    pad_h, pad_w = -height % divisibility, -width % divisibility
    if pad_h == 0 and pad_w == 0:
        return tensor
    return F.pad(tensor, [0, pad_w, 0, pad_h], value=value).contiguous()


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


def train_metadata(cfg):
    """Metadata of the first training dataset, which the mappers assume all training sets share."""
    if not cfg.DATASETS.TRAIN:
        raise ValueError("cfg.DATASETS.TRAIN is empty; the dataset mappers read the ignore label "
                         "and classes from the first training dataset's metadata")
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0])


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
            is_train: must be True; evaluation uses detectron2's DatasetMapper.
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

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's dict is reused every epoch
        image = read_dataset_image(dataset_dict, self.img_format)
        if "sem_seg_file_name" not in dataset_dict:
            raise ValueError(f"no 'sem_seg_file_name' in the {describe_entry(dataset_dict)}")
        if "annotations" in dataset_dict:
            raise ValueError(f"semantic segmentation {describe_entry(dataset_dict)} has 'annotations'; "
                             "it should have only a label map")
        sem_seg = read_semantic_label_map(dataset_dict.pop("sem_seg_file_name"), dataset_dict,
                                          image, self.num_classes, self.ignore_label)

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        T.apply_augmentations(self.tfm_gens, aug_input)
        image_tensor, sem_seg_tensor = self._pad(aug_input.image, aug_input.sem_seg)

        dataset_dict["image"] = image_tensor
        dataset_dict["sem_seg"] = sem_seg_tensor
        dataset_dict["instances"] = self._semantic_instances(sem_seg_tensor)
        return dataset_dict

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
