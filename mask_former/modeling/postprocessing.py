"""Inference from mask classification: per-query class logits and mask logits -> semantic,
panoptic and instance segmentation, and the cropping and resizing to the output size."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, Instances


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Marginalises over queries: (..., Q, K+1) logits, (..., Q, H, W) mask logits -> (..., K, H, W)
    scores; leading batch dimensions are optional."""
    return marginalise(mask_cls, mask_pred.sigmoid())


def marginalise(mask_cls: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
    """semantic_inference from mask probabilities: (..., Q, K+1) logits, (..., Q, H, W)
    probabilities -> (..., K, H, W) scores."""
    mask_cls = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("...qc,...qhw->...chw", mask_cls, mask_probs)


def upsample_masks(mask_pred: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(B, Q, h, w) mask logits -> (B, Q, H, W) at the padded input size: bilinear,
    align_corners=False, as the official inference."""
    return F.interpolate(mask_pred, size=size, mode="bilinear", align_corners=False)


def semantic_maps(mask_cls: torch.Tensor, mask_pred: torch.Tensor, size: Tuple[int, int]
                  ) -> torch.Tensor:
    """The semantic-only inference of a batch: (B, Q, K+1) class logits, (B, Q, h, w) mask logits
    -> (B, K, H, W) scores at the padded input size `size` (upsampled, then marginalised: the
    official order)."""
    return semantic_inference(mask_cls, upsample_masks(mask_pred, size))


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
                       object_mask_threshold: float, overlap_threshold: float,
                       within_masks: bool = False) -> Tuple[torch.Tensor, List[dict]]:
    """Panoptic segmentation from one image's predictions.

    mask_cls: (Q, K+1) logits; mask_pred: (Q, H, W) mask logits; thing_ids: contiguous ids of
    "thing" classes. Keeps queries whose best class is not "no object" and scores above
    `object_mask_threshold`, gives each pixel to the query of highest score * mask probability,
    drops segments keeping less than `overlap_threshold` of their own mask (p >= 0.5), and merges
    all segments of one stuff class. `within_masks` (Mask2Former's rule): a segment keeps only
    the pixels inside its own mask, the others stay void.

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
    # (Q', H, W): the pixels each kept query wins, and those inside its own mask
    assigned = cur_mask_ids[None] == torch.arange(len(cur_classes), device=mask_pred.device)[:, None, None]
    inside = cur_masks >= 0.5
    segment_masks = assigned & inside if within_masks else assigned
    thing_ids = set(thing_ids)
    stuff_segment_ids: Dict[int, int] = {}
    # One host transfer for the per-query numbers the loop needs.
    classes = cur_classes.tolist()
    mask_areas, original_areas, kept_areas = torch.stack(
        [m.flatten(1).sum(1) for m in (assigned, inside, segment_masks)]).tolist()
    current_segment_id = 0
    for k, pred_class in enumerate(classes):
        mask_area, original_area = mask_areas[k], original_areas[k]
        if mask_area == 0 or original_area == 0 or kept_areas[k] == 0:
            continue
        if mask_area / original_area < overlap_threshold:
            continue
        mask = segment_masks[k]
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


def instance_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor, num_detections: int,
                       thing_ids: Optional[Sequence[int]] = None) -> Instances:
    """Instance segmentation from one image's predictions (Mask2Former's).

    mask_cls: (Q, K+1) logits; mask_pred: (Q, H, W) mask logits at the output size. Every
    (query, class) pair is a candidate with score p(class | query); the `num_detections` best are
    kept, best first (then only those of `thing_ids`, where given: panoptic models also predict
    stuff). Each keeps its query's mask binarised at logit > 0, and its score becomes
    p(class) * the mean mask probability inside that mask.

    Returns Instances of (H, W) with pred_masks (N, H, W) bool, pred_boxes (from the masks),
    scores (N,) and pred_classes (N,).
    """
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]  # (Q, K)
    scores, pairs = scores.flatten().topk(min(num_detections, num_queries * num_classes))
    classes = pairs % num_classes
    mask_pred = mask_pred[pairs // num_classes]
    if thing_ids is not None:
        keep = torch.isin(classes, torch.as_tensor(list(thing_ids), device=classes.device))
        scores, classes, mask_pred = scores[keep], classes[keep], mask_pred[keep]
    masks = mask_pred > 0
    flat = masks.flatten(1).to(mask_pred.dtype)
    mask_scores = (mask_pred.sigmoid().flatten(1) * flat).sum(1) / (flat.sum(1) + 1e-6)
    result = Instances(tuple(mask_pred.shape[-2:]))
    result.pred_masks = masks
    result.pred_boxes = BitMasks(masks).get_bounding_boxes()
    result.scores = scores * mask_scores
    result.pred_classes = classes
    return result
