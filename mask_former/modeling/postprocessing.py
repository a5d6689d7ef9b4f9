"""Inference from mask classification: per-query class logits and mask logits -> semantic and
panoptic segmentation, and the cropping and resizing to the output size (the paper's Sec. 3.4)."""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess


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
