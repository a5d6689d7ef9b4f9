"""The MaskFormer meta-architecture: backbone -> segmentation head -> set criterion (training) or
mask-classification inference. Plain eager PyTorch: `mask_former.engine.accelerate` adds the
fast paths (CUDA graphs, compilation, fused losses) beside it."""
from typing import Callable, Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.structures import ImageList
from torch import nn

from .modeling.criterion import SetCriterion
from .modeling.postprocessing import (
    crop_and_resize,
    instance_inference,
    panoptic_inference,
    semantic_inference,
    semantic_maps,
    upsample_masks,
)


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask classification for semantic, panoptic and instance segmentation: MaskFormer (Cheng et
    al., NeurIPS 2021) and Mask2Former (Cheng et al., CVPR 2022), which differ in their head's
    parts and their criterion, not here.

    Input: detectron2's list of dicts with "image" (C, H, W) in 0-255, optional "height"/"width"
    for the output size, and in training "instances" with `gt_classes` (M,) and `gt_masks`
    (M, H, W). Training returns the weighted loss dict; inference returns per image what is on:
    {"sem_seg": (K, height, width)}, {"panoptic_seg": (id map, segments_info)},
    {"instances": Instances}.

    `forward` runs four steps, each a method: `preprocess_images` (normalise, pad), `network`
    (backbone + head: everything that sees pixels), then `losses` or `inference`.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        semantic_on: bool = True,
        panoptic_on: bool = False,
        instance_on: bool = False,
        test_topk_per_image: int = 100,
        panoptic_within_masks: bool = False,
    ):
        """
        Args:
            backbone: a detectron2 backbone.
            sem_seg_head: maps the backbone's features to {"pred_logits", "pred_masks",
                "aux_outputs"} (MaskFormerHead).
            criterion: the set criterion (SetCriterion), with its `weight_dict`.
            object_mask_threshold, overlap_threshold: panoptic inference's thresholds.
            metadata: the training dataset's metadata; panoptic inference reads its
                `thing_dataset_id_to_contiguous_id`.
            size_divisibility: pad images to a multiple of this (< 0: the backbone's).
            sem_seg_postprocess_before_inference: resize the mask logits to the output size
                before marginalising (needed for panoptic inference), instead of after.
            pixel_mean, pixel_std: per-channel normalisation, in the input's channel order.
            semantic_on, panoptic_on, instance_on: which outputs inference returns.
            test_topk_per_image: instance inference keeps this many (query, class) pairs.
            panoptic_within_masks: Mask2Former's panoptic rule: a segment keeps only the pixels
                inside its own mask (see postprocessing.panoptic_inference).
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        if not (semantic_on or panoptic_on or instance_on):
            raise ValueError("MaskFormer: no output is on; set one of MODEL.MASK_FORMER.TEST."
                             "SEMANTIC_ON, PANOPTIC_ON, INSTANCE_ON")
        if (panoptic_on or instance_on or not semantic_on) and not sem_seg_postprocess_before_inference:
            raise ValueError("MaskFormer: panoptic, instance and semantic-off inference need "
                             "sem_seg_postprocess_before_inference")
        self.semantic_on = semantic_on
        self.panoptic_on = panoptic_on
        self.instance_on = instance_on
        self.test_topk_per_image = test_topk_per_image
        self.panoptic_within_masks = panoptic_within_masks
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        # The semantic-only path's computation over the batch (postprocessing.semantic_maps);
        # accelerate() puts a compiled one in its place under ACCELERATION.COMPILE.
        self.semantic_maps: Callable = semantic_maps
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        test = cfg.MODEL.MASK_FORMER.TEST
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": SetCriterion(cfg, sem_seg_head.num_classes),
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON
                or test.INSTANCE_ON or not test.SEMANTIC_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            # Mask2Former's recipe (point-sampled training) comes with its panoptic rule.
            "panoptic_within_masks": cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS > 0,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def to_device(self, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        # non_blocking: a copy from pinned memory (the accelerated training loader pins batches)
        # then does not wait for the GPU; from ordinary memory it is an ordinary copy.
        return [t.to(self.device, non_blocking=True) for t in tensors]

    def preprocess_images(self, batched_inputs: List[dict]) -> ImageList:
        """Normalises and pads the batch: an ImageList of (B, C, H_pad, W_pad)."""
        images = self.to_device([x["image"][None] for x in batched_inputs])
        sizes = {tuple(image.shape[-2:]) for image in images}
        if len(sizes) == 1 and all(s % max(self.size_divisibility, 1) == 0 for s in next(iter(sizes))):
            # Already one padded size (the training mappers pad): normalise the batch at once.
            batch = (torch.cat(images) - self.pixel_mean) / self.pixel_std
            return ImageList(batch, [tuple(image.shape[-2:]) for image in images])
        images = [(image[0] - self.pixel_mean) / self.pixel_std for image in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def network(self, images: torch.Tensor) -> dict:
        """Backbone and head: (B, C, H, W) normalised images -> {"pred_logits" (B, Q, K+1),
        "pred_masks" (B, Q, H/4, W/4), "aux_outputs": [...]}."""
        return self.sem_seg_head(self.backbone(images))

    def predictions(self, images: torch.Tensor) -> dict:
        """What inference reads of the network: its outputs less "aux_outputs" (the earlier
        decoder layers' predictions, which only the losses use)."""
        return {k: v for k, v in self.network(images).items() if k != "aux_outputs"}

    def forward(self, batched_inputs: List[dict]):
        images = self.preprocess_images(batched_inputs)
        outputs = self.network(images.tensor)
        if self.training:
            return self.losses(outputs, batched_inputs, images)
        return self.inference(outputs, batched_inputs, images)

    def losses(self, outputs: dict, batched_inputs: List[dict], images: ImageList) -> Dict[str, torch.Tensor]:
        """The criterion's losses, each times its weight in `criterion.weight_dict`."""
        if "instances" not in batched_inputs[0]:
            raise ValueError("MaskFormer training needs 'instances' (gt_classes, gt_masks) "
                             "in every input; use a MaskFormer dataset mapper.")
        targets = self.prepare_targets([x["instances"] for x in batched_inputs], images)
        losses = self.criterion(outputs, targets)
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    def prepare_targets(self, instances, images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """Pads each image's gt masks (M, h, w) to the batch's padded size (M, H_pad, W_pad)."""
        h_pad, w_pad = images.tensor.shape[-2:]
        masks = [getattr(inst.gt_masks, "tensor", inst.gt_masks) for inst in instances]  # BitMasks or a tensor
        labels = self.to_device([inst.gt_classes for inst in instances])
        targets = []
        for gt_masks, gt_classes in zip(self.to_device(masks), labels):
            if gt_masks.shape[-2:] != (h_pad, w_pad):
                padded = gt_masks.new_zeros((gt_masks.shape[0], h_pad, w_pad))
                padded[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
                gt_masks = padded
            targets.append({"labels": gt_classes, "masks": gt_masks})
        return targets

    def inference(self, outputs: dict, batched_inputs: List[dict], images: ImageList) -> List[dict]:
        """Per image the outputs that are on (see postprocessing.py)."""
        mask_cls_results = outputs["pred_logits"]
        output_sizes = [(x.get("height", size[0]), x.get("width", size[1]))
                        for x, size in zip(batched_inputs, images.image_sizes)]
        # Upsampled to the padded input size; each image is cropped to its own size afterwards.
        padded_size = tuple(images.tensor.shape[-2:])
        if not self.sem_seg_postprocess_before_inference:
            # Semantic only, in the official order (marginalise, then crop and resize), for the
            # batch at once.
            sem_segs = self.semantic_maps(mask_cls_results, outputs["pred_masks"], padded_size)
            return [{"sem_seg": crop_and_resize(sem_seg, image_size, *output_size)}
                    for sem_seg, image_size, output_size
                    in zip(sem_segs, images.image_sizes, output_sizes)]
        mask_pred_results = upsample_masks(outputs["pred_masks"], padded_size)
        processed = []
        for mask_cls, mask_pred, image_size, output_size in zip(
            mask_cls_results, mask_pred_results, images.image_sizes, output_sizes
        ):
            mask_pred = crop_and_resize(mask_pred, image_size, *output_size)
            mask_cls = mask_cls.to(mask_pred)
            result = {}
            if self.semantic_on:
                result["sem_seg"] = semantic_inference(mask_cls, mask_pred)
            if self.panoptic_on:
                result["panoptic_seg"] = panoptic_inference(
                    mask_cls, mask_pred, self.thing_ids, self.object_mask_threshold,
                    self.overlap_threshold, within_masks=self.panoptic_within_masks,
                )
            if self.instance_on:
                result["instances"] = instance_inference(
                    mask_cls, mask_pred, self.test_topk_per_image,
                    thing_ids=self.thing_ids if self.panoptic_on else None,
                )
            processed.append(result)
        return processed

    @property
    def thing_ids(self) -> List[int]:
        """Contiguous ids of thing classes, from the metadata's thing_dataset_id_to_contiguous_id."""
        mapping = getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping is None:
            name = getattr(self.metadata, "name", None)
            raise ValueError(
                f"Panoptic inference needs `thing_dataset_id_to_contiguous_id` in the metadata of "
                f"DATASETS.TRAIN[0] ({name!r}) to tell things from stuff."
            )
        return list(mapping.values())
