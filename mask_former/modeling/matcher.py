"""Hungarian matching of predicted masks to ground-truth segments."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .losses import pairwise_dice_cost, pairwise_focal_cost


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising class + focal + dice costs.

    Targets are downsampled (nearest) to the prediction resolution before computing costs.
    Costs of all images are computed on the predictions' device and brought to the host in one
    transfer per batch.
    """

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor],
                targets: List[Dict[str, torch.Tensor]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """outputs: "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, h, w);
        targets: per image "labels" (M,) and "masks" (M, H, W).

        Returns per image (query indices, target indices), each int64 of length min(Q, M).
        """
        costs = [
            self._cost_matrix(logits, masks, target)
            for logits, masks, target in zip(outputs["pred_logits"], outputs["pred_masks"], targets)
        ]
        host_costs = torch.cat([c.flatten() for c in costs]).float().cpu()
        indices = []
        start = 0
        for c in costs:
            cost = host_costs[start:start + c.numel()].view(c.shape)
            start += c.numel()
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def _cost_matrix(self, logits: torch.Tensor, masks: torch.Tensor,
                     target: Dict[str, torch.Tensor]) -> torch.Tensor:
        """logits (Q, K+1), masks (Q, h, w) -> cost (Q, M)."""
        labels = target["labels"]
        cost_class = -logits.float().softmax(-1)[:, labels]
        tgt_masks = target["masks"].to(masks)
        tgt_masks = F.interpolate(tgt_masks[:, None], size=masks.shape[-2:], mode="nearest")[:, 0]
        pred = masks.float().flatten(1)
        tgt = tgt_masks.float().flatten(1)
        return (
            self.cost_mask * pairwise_focal_cost(pred, tgt)
            + self.cost_class * cost_class
            + self.cost_dice * pairwise_dice_cost(pred, tgt)
        )

    def __repr__(self):
        return (f"HungarianMatcher(cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
                f"cost_dice={self.cost_dice})")
