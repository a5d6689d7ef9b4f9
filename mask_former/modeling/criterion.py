"""MaskFormer's set criterion: classification and mask losses on Hungarian-matched pairs."""
from typing import Dict, List, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils.comm import get_world_size
from torch import nn

from .losses import dice_loss, sigmoid_focal_loss


def average_num_masks(targets: List[Dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Number of target masks, averaged over all workers (at least 1), to normalise mask losses.

    Stays a device tensor: reading it on the host would stall the GPU every step.
    """
    num_masks = torch.as_tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num_masks)
    return torch.clamp(num_masks / get_world_size(), min=1)


class SetCriterion(nn.Module):
    """Losses of MaskFormer, for the final layer and (with "aux_outputs") every earlier layer.

    - "labels": cross-entropy over K+1 classes, unmatched queries target "no object" with weight
      `eos_coef`;
    - "masks": sigmoid focal and dice losses between matched masks, upsampled to target size.
    Returns unweighted losses; `weight_dict` holds the weights the meta-architecture applies.
    """

    def __init__(self, num_classes: int, matcher: nn.Module, weight_dict: Dict[str, float],
                 eos_coef: float, losses: Sequence[str] = ("labels", "masks")):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        unknown = set(losses) - {"labels", "masks"}
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {sorted(unknown)}")
        self.losses = list(losses)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
        logits = outputs["pred_logits"].float()  # (B, Q, K+1)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=logits.device)
        batch_idx, query_idx = self._matched_queries(indices)
        target_classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)]
        ).to(logits.device)
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(self, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
        batch_idx, query_idx = self._matched_queries(indices)
        # float32 losses also under autocast: sums over many pixels need the precision
        pred_masks = outputs["pred_masks"][batch_idx, query_idx].float()  # (N, h, w), N matched
        # Targets are already padded to one size per batch by the meta-architecture.
        target_masks = torch.cat(
            [t["masks"][tgt] for t, (_, tgt) in zip(targets, indices)]
        ).to(pred_masks)  # (N, H, W)
        pred_masks = F.interpolate(pred_masks[:, None], size=target_masks.shape[-2:],
                                   mode="bilinear", align_corners=False)[:, 0]
        pred_masks = pred_masks.flatten(1)
        target_masks = target_masks.flatten(1)
        return {
            "loss_mask": sigmoid_focal_loss(pred_masks, target_masks, num_masks),
            "loss_dice": dice_loss(pred_masks, target_masks, num_masks),
        }

    @staticmethod
    def _matched_queries(indices):
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return batch_idx, query_idx

    def _layer_losses(self, outputs, targets, num_masks) -> Dict[str, torch.Tensor]:
        indices = self.matcher(outputs, targets)
        losses = {}
        for name in self.losses:
            loss_fn = self.loss_labels if name == "labels" else self.loss_masks
            losses.update(loss_fn(outputs, targets, indices, num_masks))
        return losses

    def forward(self, outputs: dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """outputs: the head's dict; targets: per image "labels" (M,) and "masks" (M, H, W)."""
        num_masks = average_num_masks(targets, outputs["pred_masks"].device)
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        losses = self._layer_losses(final, targets, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(
                {f"{k}_{i}": v for k, v in self._layer_losses(aux, targets, num_masks).items()}
            )
        return losses

    def __repr__(self):
        return (f"SetCriterion(num_classes={self.num_classes}, matcher={self.matcher!r}, "
                f"losses={self.losses}, eos_coef={self.eos_coef}, weight_dict={self.weight_dict})")
