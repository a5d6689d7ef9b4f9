"""The evaluation mapper: detectron2's DatasetMapper at inference, reading through
mask_former.data.io."""
import copy
import logging
from typing import Dict, List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..io import read_dataset_image

__all__ = ["InferenceDatasetMapper"]


class InferenceDatasetMapper:
    """Maps a dataset dict to a model input for evaluation, as detectron2's DatasetMapper with
    is_train=False does, except that:

    - the image is read by `read_dataset_image`, so a missing, truncated or mis-sized image fails
      naming its file (detectron2's reader says only "image file is truncated");
    - the label files are not read: the evaluators read and check them (detectron2's mapper reads
      a semantic label map only to discard it, and fails with a bare AssertionError on one whose
      size is not the image's).

    Returns the dict with "image": (3, H, W) uint8 tensor in `image_format`, resized; "height" and
    "width" of the image as read (the model resizes its outputs to them), and without
    "sem_seg_file_name" and "annotations".
    """

    @configurable
    def __init__(self, *, augmentations: List[T.Augmentation], image_format: str):
        """
        Args:
            augmentations: applied in order to the image (the test-time resize).
            image_format: a format of `detection_utils.read_image` ("RGB", "BGR", ...).
        """
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] Augmentations used in inference: {augmentations}")

    @classmethod
    def from_config(cls, cfg):
        return {
            # ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST), as DatasetMapper's
            "augmentations": utils.build_augmentation(cfg, is_train=False),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's dict is reused
        image = read_dataset_image(dataset_dict, self.image_format)
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        image = np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
        dataset_dict["image"] = torch.as_tensor(image)
        dataset_dict.pop("sem_seg_file_name", None)
        dataset_dict.pop("annotations", None)
        return dataset_dict
