"""MaskFormer's training mapper for panoptic segmentation (ADE20K-panoptic style datasets)."""
import copy
from typing import Dict, List

import numpy as np
import torch
from detectron2.data import transforms as T

from ..io import entry_error, pad_to_multiple, read_dataset_image, read_panoptic_png, rgb_to_id
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper, segment_instances

__all__ = ["MaskFormerPanopticDatasetMapper"]


class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Maps a panoptic dataset dict to MaskFormer's training input (training only).

    Same constructor, config and augmentations as MaskFormerSemanticDatasetMapper. Reads
    "pan_seg_file_name" (RGB-encoded segment ids, 0 = void) with "segments_info" (each with "id",
    contiguous "category_id" and "iscrowd"), and "sem_seg_file_name" where the entry has one.
    Returns the dict with:
        "image": (3, H, W) uint8 tensor,
        "sem_seg": (H, W) int64, only when the entry has a semantic label map,
        "instances": one target per non-crowd segment, in "segments_info" order:
            gt_classes (N,) int64, gt_masks (N, H, W) bool (a segment cropped away has an
            empty mask, as in the official mapper).
    """

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's dict is reused every epoch
        image = read_dataset_image(dataset_dict, self.img_format)
        if "annotations" in dataset_dict:
            raise entry_error(dataset_dict, "has 'annotations'; for panoptic segmentation it "
                              "should have 'pan_seg_file_name' and 'segments_info'")
        sem_seg = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg = self._read_label_map(dataset_dict.pop("sem_seg_file_name"), dataset_dict,
                                           image)
        pan_seg = read_panoptic_png(dataset_dict, image.shape[:2], self.num_classes)
        dataset_dict.pop("pan_seg_file_name")
        segments_info = dataset_dict["segments_info"]

        # The category-area crop needs class ids; without a semantic label map they come from
        # the segments (the official mapper fails there instead).
        area_map = sem_seg if sem_seg is not None else self._category_map(pan_seg, segments_info)
        aug_input = T.AugInput(image, sem_seg=area_map)
        _, transforms = T.apply_augmentations(self.tfm_gens, aug_input)
        segment_ids = rgb_to_id(transforms.apply_segmentation(pan_seg))

        image_tensor, sem_seg_tensor = self._pad(
            aug_input.image, aug_input.sem_seg if sem_seg is not None else None
        )
        if self.size_divisibility > 0:
            # 0 is the void segment id, so padding belongs to no segment
            segment_ids = pad_to_multiple(torch.from_numpy(segment_ids), self.size_divisibility,
                                          0).numpy()

        dataset_dict["image"] = image_tensor
        if sem_seg_tensor is not None:
            dataset_dict["sem_seg"] = sem_seg_tensor
        dataset_dict["instances"] = segment_instances(segment_ids, segments_info)
        return dataset_dict

    def _category_map(self, pan_seg: np.ndarray, segments_info: List[Dict]) -> np.ndarray:
        """(H, W, 3) panoptic PNG -> (H, W) float64 category ids; void, crowds: ignore label."""
        segment_ids = rgb_to_id(pan_seg)
        categories = np.full(segment_ids.shape, self.ignore_label, dtype=np.float64)
        for segment in segments_info:
            if not segment["iscrowd"]:
                categories[segment_ids == segment["id"]] = segment["category_id"]
        return categories

