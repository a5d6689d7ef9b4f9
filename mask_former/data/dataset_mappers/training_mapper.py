"""What MaskFormer's training mappers share: training only, their augmentations logged."""
import logging
from typing import List, Optional

from detectron2.data import transforms as T

__all__ = ["TrainingDatasetMapper"]


class TrainingDatasetMapper:
    """Base of the training mappers: keeps the augmentations, image format and class count.

    Evaluation reads images with InferenceDatasetMapper, so `is_train` must be True.
    """

    def __init__(self, is_train: bool, augmentations: List[T.Augmentation], image_format: str,
                 num_classes: Optional[int]):
        if not is_train:
            raise ValueError(f"{type(self).__name__} is for training only; evaluation reads "
                             "images with InferenceDatasetMapper")
        self.is_train = is_train
        self.tfm_gens = list(augmentations)
        self.img_format = image_format
        self.num_classes = num_classes
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] Augmentations used in training: {self.tfm_gens}")
