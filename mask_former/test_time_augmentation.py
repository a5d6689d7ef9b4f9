"""Test-time augmentation for semantic segmentation: multi-scale resizing and horizontal flip."""
from typing import List

import torch
from detectron2.modeling import DatasetMapperTTA
from fvcore.transforms import HFlipTransform
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class SemanticSegmentorWithTTA(nn.Module):
    """Averages a segmentation model's "sem_seg" over the augmentations of cfg.TEST.AUG.

    Each augmented copy (every size in TEST.AUG.MIN_SIZES, each also flipped when TEST.AUG.FLIP)
    runs through the model, which resizes its prediction to the input's "height"/"width";
    flipped predictions are flipped back, and the average (K, height, width) is returned.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 1):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.model = model
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        self.batch_size = batch_size

    def __call__(self, batched_inputs: List[dict]) -> List[dict]:
        return [self._inference_one_image(x) for x in batched_inputs]

    @torch.no_grad()
    def _inference_one_image(self, dataset_dict: dict) -> dict:
        augmented = self.tta_mapper(dataset_dict)
        total = None
        for start in range(0, len(augmented), self.batch_size):
            chunk = augmented[start:start + self.batch_size]
            for inputs, output in zip(chunk, self.model(chunk)):
                sem_seg = output["sem_seg"]
                if any(isinstance(t, HFlipTransform) for t in inputs["transforms"].transforms):
                    sem_seg = sem_seg.flip(dims=[2])
                total = sem_seg if total is None else total + sem_seg
        return {"sem_seg": total / len(augmented)}
