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
    The costs of the whole batch are computed on the predictions' device in a few large kernels
    and brought to the host in one transfer; only the assignment itself runs on the CPU.
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
        return self.match_layers([outputs], targets)[0]

    @torch.no_grad()
    def match_layers(self, layer_outputs: List[Dict[str, torch.Tensor]],
                     targets: List[Dict[str, torch.Tensor]]) -> List[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """Matches the outputs of several decoder layers against the same targets at once.

        The costs of all layers, images and targets are one (L*B*Q, sum M) matrix computed in a
        few large kernels and brought to the host in one transfer; only the assignments run on
        the CPU. Returns, per layer, what `forward` returns.
        """
        num_layers = len(layer_outputs)
        batch_size, num_queries = layer_outputs[0]["pred_logits"].shape[:2]
        sizes = [len(t["labels"]) for t in targets]
        stacked = {key: torch.cat([o[key] for o in layer_outputs]) for key in ("pred_logits", "pred_masks")}
        cost = self._cost_matrix(stacked, targets)
        cost = cost.view(num_layers, batch_size, num_queries, sum(sizes)).cpu()
        matches = []
        for layer_cost in cost:
            layer_matches = []
            for b, block in enumerate(layer_cost.split(sizes, dim=-1)):
                rows, cols = linear_sum_assignment(block[b].numpy())
                layer_matches.append((torch.as_tensor(rows, dtype=torch.int64),
                                      torch.as_tensor(cols, dtype=torch.int64)))
            matches.append(layer_matches)
        return matches

    def _cost_matrix(self, outputs: Dict[str, torch.Tensor],
                     targets: List[Dict[str, torch.Tensor]]) -> torch.Tensor:
        """(N*Q, sum M) costs of every query against every target of the batch.

        outputs hold N = (layers x) B images' predictions; target masks are shared by all.
        """
        logits = outputs["pred_logits"].float().flatten(0, 1)  # (B*Q, K+1)
        masks = outputs["pred_masks"].float()  # (B, Q, h, w)
        labels = torch.cat([t["labels"] for t in targets]).to(logits.device)
        tgt_masks = torch.cat([
            F.interpolate(t["masks"].to(masks)[:, None], size=masks.shape[-2:], mode="nearest")[:, 0]
            for t in targets
        ])  # (sum M, h, w)
        pred = masks.flatten(0, 1).flatten(1)
        tgt = tgt_masks.flatten(1)
        cost_class = -logits.softmax(-1)[:, labels]
        return (
            self.cost_mask * pairwise_focal_cost(pred, tgt)
            + self.cost_class * cost_class
            + self.cost_dice * pairwise_dice_cost(pred, tgt)
        )

    def __repr__(self):
        return (f"HungarianMatcher(cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
                f"cost_dice={self.cost_dice})")
