"""MaskFormer's set criterion: classification and mask losses on Hungarian-matched pairs."""
from typing import Dict, List, NamedTuple, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils.comm import get_world_size
from torch import nn

from .losses import FusedMaskLosses


def average_num_masks(targets: List[Dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Number of target masks, averaged over all workers (at least 1), to normalise mask losses.

    Stays a device tensor: reading it on the host would stall the GPU every step.
    """
    # torch.full fills on the device; a tensor made from a number on the host would be copied,
    # and a blocking copy waits for the GPU.
    num_masks = torch.full((), float(sum(len(t["labels"]) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num_masks)
    return torch.clamp(num_masks / get_world_size(), min=1)


class MatchedPairs(NamedTuple):
    """The N matched (query, target) pairs of one decoder layer, on the targets' device."""

    batch: torch.Tensor  # (N,) image index
    query: torch.Tensor  # (N,) query index
    labels: torch.Tensor  # (N,) target class
    masks: torch.Tensor  # (N, H, W) target mask

    @staticmethod
    def gather(layer_matches, targets) -> List["MatchedPairs"]:
        """Per layer, the matched pairs; index tensors go to the device in one transfer."""
        offsets = torch.tensor([0] + [len(t["labels"]) for t in targets]).cumsum(0)
        rows = []  # per layer: image, query, index into the batch's concatenated targets
        for matches in layer_matches:
            rows.append(torch.stack([
                torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(matches)]),
                torch.cat([src for src, _ in matches]),
                torch.cat([tgt + offsets[b] for b, (_, tgt) in enumerate(matches)]),
            ]))
        device = targets[0]["labels"].device
        host = torch.stack(rows)  # (layers, 3, N): every layer matches the same number of pairs
        # Right after the matcher's transfer to the host, the GPU's queue is empty: a plain
        # copy does not wait.
        indices = host.to(device)
        labels = torch.cat([t["labels"] for t in targets])
        masks = torch.cat([t["masks"] for t in targets])
        return [MatchedPairs(batch, query, labels[target], masks[target])
                for batch, query, target in indices]


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
        self.mask_losses = FusedMaskLosses()
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, outputs, matched: MatchedPairs, num_masks) -> Dict[str, torch.Tensor]:
        """Cross-entropy over K+1 classes; unmatched queries target "no object"."""
        logits = outputs["pred_logits"].float()  # (B, Q, K+1)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=logits.device)
        target_classes[matched.batch, matched.query] = matched.labels
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(self, outputs, matched: MatchedPairs, num_masks) -> Dict[str, torch.Tensor]:
        """Focal and dice losses of the N matched masks, upsampled to the targets' (H, W)."""
        # Targets are already padded to one size per batch by the meta-architecture.
        pred_masks = outputs["pred_masks"][matched.batch, matched.query]  # (N, h, w)
        loss_mask, loss_dice = self.mask_losses(pred_masks, matched.masks, num_masks)
        return {"loss_mask": loss_mask, "loss_dice": loss_dice}

    def _layer_losses(self, outputs, matched, num_masks) -> Dict[str, torch.Tensor]:
        losses = {}
        for name in self.losses:
            loss_fn = self.loss_labels if name == "labels" else self.loss_masks
            losses.update(loss_fn(outputs, matched, num_masks))
        return losses

    def forward(self, outputs: dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """outputs: the head's dict; targets: per image "labels" (M,) and "masks" (M, H, W).

        All layers are matched in one call, so a training step waits for the GPU once for
        matching, not once per decoder layer.
        """
        num_masks = average_num_masks(targets, outputs["pred_masks"].device)
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        layers = [final] + list(outputs.get("aux_outputs", []))
        layer_matches = self.matcher.match_layers(layers, targets)
        all_matched = MatchedPairs.gather(layer_matches, targets)
        losses = {}
        for i, (layer, matched) in enumerate(zip(layers, all_matched)):
            suffix = "" if i == 0 else f"_{i - 1}"
            layer_losses = self._layer_losses(layer, matched, num_masks)
            losses.update({k + suffix: v for k, v in layer_losses.items()})
        return losses

    def __repr__(self):
        return (f"SetCriterion(num_classes={self.num_classes}, matcher={self.matcher!r}, "
                f"losses={self.losses}, eos_coef={self.eos_coef}, weight_dict={self.weight_dict})")
