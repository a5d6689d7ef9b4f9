"""The MaskFormer meta-architecture: backbone -> MaskFormerHead -> set criterion / inference."""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

from .modeling.criterion import SetCriterion
from .modeling.cuda_graph import CUDAGraphRunner, TrainingGraphs
from .modeling.matcher import HungarianMatcher


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Marginalises over queries: (..., Q, K+1) logits, (..., Q, H, W) mask logits -> (..., K, H, W)
    scores; leading batch dimensions are optional."""
    mask_cls = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("...qc,...qhw->...chw", mask_cls, mask_pred.sigmoid())


def crop_and_resize(result: torch.Tensor, image_size: Tuple[int, int], height: int, width: int
                    ) -> torch.Tensor:
    """detectron2's sem_seg_postprocess: (C, H_pad, W_pad) -> (C, height, width), cropping the
    padding off and resizing. Where no resize is needed the crop (a view) is returned: a bilinear
    resize to the same size is an exact copy, which would cost a pass over (C, height, width).
    """
    result = result[:, : image_size[0], : image_size[1]]
    if tuple(result.shape[-2:]) == (height, width):
        return result
    return sem_seg_postprocess(result, image_size, height, width)


def panoptic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor, thing_ids: Sequence[int],
                       object_mask_threshold: float, overlap_threshold: float
                       ) -> Tuple[torch.Tensor, List[dict]]:
    """Panoptic segmentation from one image's predictions.

    mask_cls: (Q, K+1) logits; mask_pred: (Q, H, W) mask logits; thing_ids: contiguous ids of
    "thing" classes. Keeps queries whose best class is not "no object" and scores above
    `object_mask_threshold`, gives each pixel to the query of highest score * mask probability,
    drops segments keeping less than `overlap_threshold` of their own mask (p >= 0.5), and merges
    all segments of one stuff class.

    Returns an int32 (H, W) id map (0 = no segment) and segments_info
    [{"id", "isthing", "category_id"}].
    """
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    mask_pred = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]

    height, width = mask_pred.shape[-2:]
    panoptic_seg = torch.zeros((height, width), dtype=torch.int32, device=mask_pred.device)
    segments_info: List[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info

    cur_mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    thing_ids = set(thing_ids)
    stuff_segment_ids: Dict[int, int] = {}
    # One host transfer for the per-query numbers the loop needs.
    classes = cur_classes.tolist()
    mask_areas = torch.stack([(cur_mask_ids == k).sum() for k in range(len(classes))]).tolist()
    original_areas = (cur_masks >= 0.5).flatten(1).sum(1).tolist()
    current_segment_id = 0
    for k, pred_class in enumerate(classes):
        mask_area, original_area = mask_areas[k], original_areas[k]
        if mask_area == 0 or original_area == 0 or mask_area / original_area < overlap_threshold:
            continue
        mask = cur_mask_ids == k
        isthing = pred_class in thing_ids
        if not isthing and pred_class in stuff_segment_ids:
            panoptic_seg[mask] = stuff_segment_ids[pred_class]
            continue
        current_segment_id += 1
        if not isthing:
            stuff_segment_ids[pred_class] = current_segment_id
        panoptic_seg[mask] = current_segment_id
        segments_info.append(
            {"id": current_segment_id, "isthing": bool(isthing), "category_id": int(pred_class)}
        )
    return panoptic_seg, segments_info


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask classification for semantic and panoptic segmentation (Cheng et al., NeurIPS 2021).

    Input: detectron2's list of dicts with "image" (C, H, W) in 0-255, optional "height"/"width"
    for the output size, and in training "instances" with `gt_classes` (M,) and `gt_masks`
    (M, H, W). Training returns the weighted loss dict; inference returns per image
    {"sem_seg": (K, height, width)} plus {"panoptic_seg": (id map, segments_info)} with panoptic on.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        panoptic_on: bool,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        cuda_graph: bool = True,
        train_cuda_graph: bool = True,
        cuda_graph_max_shapes: int = 2,
        compile_network: bool = False,
    ):
        """
        Args:
            cuda_graph: in inference on a GPU, replay a CUDA graph of backbone + head recorded
                once per input shape (CUDAGraphRunner). Same results, several times faster at
                small batches.
            train_cuda_graph: in training on a GPU, replay CUDA graphs of the forward and
                backward passes of backbone + head (TrainingGraphs); matching, losses and the
                optimizer stay eager. Same results, gradients accumulate into `.grad` as in eager
                mode; batches must have a fixed size (the training mappers pad them to
                INPUT.SIZE_DIVISIBILITY) to benefit.
            cuda_graph_max_shapes: graphs are recorded for at most this many input shapes
                (each, training and inference); other shapes run eagerly.
            compile_network: run backbone + head through torch.compile (training and inference):
                far fewer kernel launches once compiled, after a first step that compiles for a
                minute or two; results change within float32 rounding.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.panoptic_on = panoptic_on
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.network_fn = torch.compile(self.network) if compile_network else self.network
        self.graphed_network = (CUDAGraphRunner(self.network_fn, cuda_graph_max_shapes)
                                if cuda_graph else None)
        self.training_graphs = (TrainingGraphs(self.network_fn, self, cuda_graph_max_shapes)
                                if train_cuda_graph else None)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": build_criterion(cfg, sem_seg_head.num_classes),
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "panoptic_on": cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON,
            "object_mask_threshold": cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE
                or cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "cuda_graph": cfg.MODEL.MASK_FORMER.TEST.CUDA_GRAPH,
            "train_cuda_graph": cfg.MODEL.MASK_FORMER.TRAIN_CUDA_GRAPH,
            "cuda_graph_max_shapes": cfg.MODEL.MASK_FORMER.CUDA_GRAPH_MAX_SHAPES,
            "compile_network": cfg.MODEL.MASK_FORMER.COMPILE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def to_device(self, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        """Copies tensors to the model's device without making the host wait for the GPU.

        A copy from ordinary (pageable) host memory waits until the GPU has finished all work
        queued before it, so the next batch could not be prepared while this one runs. On a GPU,
        tensors are therefore copied from pinned host memory, asynchronously: the training loader
        pins them in a background thread (`mask_former.data.PinnedBatches`); anything else is
        staged through PyTorch's pinned-memory cache here.
        """
        if self.device.type != "cuda":
            return [t.to(self.device) for t in tensors]
        return [t if t.device == self.device
                else (t if t.is_pinned() else t.pin_memory()).to(self.device, non_blocking=True)
                for t in tensors]

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
        """Backbone and head: (B, C, H, W) normalised images -> the head's outputs."""
        return self.sem_seg_head(self.backbone(images))

    def run_network(self, images: torch.Tensor) -> dict:
        """`network`, replayed from CUDA graphs where they are on and the shape allows."""
        runner = self.training_graphs if self.training else self.graphed_network
        outputs = None
        if runner is not None and images.is_cuda:
            outputs = runner(images)
        return self.network_fn(images) if outputs is None else outputs

    def forward(self, batched_inputs: List[dict]):
        images = self.preprocess_images(batched_inputs)
        outputs = self.run_network(images.tensor)
        if self.training:
            if "instances" not in batched_inputs[0]:
                raise ValueError("MaskFormer training needs 'instances' (gt_classes, gt_masks) "
                                 "in every input; use a MaskFormer dataset mapper.")
            targets = self.prepare_targets([x["instances"] for x in batched_inputs], images)
            losses = self.criterion(outputs, targets)
            weights = self.criterion.weight_dict
            return {k: v * weights[k] for k, v in losses.items() if k in weights}
        return self.inference(outputs, batched_inputs, images)

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
        mask_cls_results = outputs["pred_logits"]
        # Upsample to the padded input size; each image is cropped to its own size afterwards.
        mask_pred_results = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:],
                                          mode="bilinear", align_corners=False)
        output_sizes = [(x.get("height", size[0]), x.get("width", size[1]))
                        for x, size in zip(batched_inputs, images.image_sizes)]
        if not self.sem_seg_postprocess_before_inference:
            # The official order (marginalise, then crop and resize), for the batch at once.
            sem_segs = semantic_inference(mask_cls_results, mask_pred_results)
            return [{"sem_seg": crop_and_resize(sem_seg, image_size, *output_size)}
                    for sem_seg, image_size, output_size
                    in zip(sem_segs, images.image_sizes, output_sizes)]
        processed = []
        for mask_cls, mask_pred, image_size, output_size in zip(
            mask_cls_results, mask_pred_results, images.image_sizes, output_sizes
        ):
            mask_pred = crop_and_resize(mask_pred, image_size, *output_size)
            result = {"sem_seg": semantic_inference(mask_cls, mask_pred)}
            if self.panoptic_on:
                result["panoptic_seg"] = panoptic_inference(
                    mask_cls, mask_pred, self.thing_ids, self.object_mask_threshold,
                    self.overlap_threshold,
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


def build_criterion(cfg, num_classes: int) -> SetCriterion:
    """SetCriterion with the matcher and loss weights of cfg.MODEL.MASK_FORMER."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(cost_class=1, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT)
    layer_weights = {"loss_ce": 1.0, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    weight_dict = dict(layer_weights)
    if mf.DEEP_SUPERVISION:
        for i in range(mf.DEC_LAYERS - 1):
            weight_dict.update({f"{k}_{i}": v for k, v in layer_weights.items()})
    return SetCriterion(num_classes, matcher=matcher, weight_dict=weight_dict,
                        eos_coef=mf.NO_OBJECT_WEIGHT, losses=["labels", "masks"])
