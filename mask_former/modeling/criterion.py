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


class LayerMatches(NamedTuple):
    """The matched (query, target) pairs of L decoder layers, N pairs in every layer.

    Each layer's pairs are sorted by target, so where every layer matched every target (each image
    has no more targets than queries, the usual case) all layers pair the same target masks in
    the same order and the mask losses of all layers read one target tensor.
    """

    batch: torch.Tensor  # (L, N) image index, on the targets' device
    query: torch.Tensor  # (L, N) query index
    target: torch.Tensor  # (L, N) index into the batch's concatenated targets
    all_targets_in_order: bool  # target[l] == arange(number of targets) for every layer l

    @staticmethod
    def gather(layer_matches, targets) -> "LayerMatches":
        """From the matcher's per-layer, per-image indices; one host-to-device transfer."""
        sizes = [len(t["labels"]) for t in targets]
        offsets = torch.tensor([0] + sizes).cumsum(0)
        rows = []  # per layer: image, query, index into the batch's concatenated targets
        for matches in layer_matches:
            batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(matches)])
            query = torch.cat([src for src, _ in matches])
            target = torch.cat([tgt + offsets[b] for b, (_, tgt) in enumerate(matches)])
            order = torch.argsort(target, stable=True)
            rows.append(torch.stack([batch[order], query[order], target[order]]))
        host = torch.stack(rows)  # (L, 3, N): every layer matches min(Q, M) pairs per image
        num_targets = sum(sizes)
        in_order = host.shape[-1] == num_targets and bool(
            (host[:, 2] == torch.arange(num_targets)).all())
        # Right after the matcher's transfer to the host, the GPU's queue is empty: a plain
        # copy does not wait.
        batch, query, target = host.to(targets[0]["labels"].device).unbind(1)
        return LayerMatches(batch, query, target, in_order)


class SetCriterion(nn.Module):
    """Losses of MaskFormer, for the final layer and (with "aux_outputs") every earlier layer.

    - "labels": cross-entropy over K+1 classes, unmatched queries target "no object" with weight
      `eos_coef`;
    - "masks": sigmoid focal and dice losses between matched masks, upsampled to target size.
    Returns unweighted losses; `weight_dict` holds the weights the meta-architecture applies.
    All decoder layers are computed together: one cross-entropy and one (fused) mask-loss call
    for the whole stack, so the cost in kernel launches does not grow with the number of layers.
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

    def loss_labels(self, layers: List[dict], matches: LayerMatches,
                    labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Cross-entropy over K+1 classes per layer, (L,); unmatched queries target "no object".

        labels: (T,) classes of the batch's concatenated targets.
        """
        logits = torch.stack([layer["pred_logits"] for layer in layers]).float()  # (L, B, Q, K+1)
        target_classes = torch.full(logits.shape[:3], self.num_classes, dtype=torch.int64,
                                    device=logits.device)
        layer_index = torch.arange(len(layers), device=logits.device)[:, None]
        target_classes[layer_index, matches.batch, matches.query] = labels[matches.target]
        # F.cross_entropy's weighted mean, per layer: sum(w[t] * nll) / sum(w[t])
        weighted_nll = F.cross_entropy(logits.flatten(0, 2), target_classes.flatten(),
                                       self.empty_weight, reduction="none")
        weights = self.empty_weight[target_classes]
        num_layers = len(layers)
        loss_ce = weighted_nll.view(num_layers, -1).sum(1) / weights.view(num_layers, -1).sum(1)
        return {"loss_ce": loss_ce}

    def loss_masks(self, layers: List[dict], matches: LayerMatches, target_masks: torch.Tensor,
                   num_masks: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Focal and dice losses of the matched masks per layer, (L,) each, upsampled to the
        targets' (H, W). target_masks: (T, H, W), the batch's concatenated targets."""
        # Targets are already padded to one size per batch by the meta-architecture.
        pred_masks = torch.stack([layer["pred_masks"][batch, query] for layer, batch, query
                                  in zip(layers, matches.batch, matches.query)])  # (L, N, h, w)
        if matches.all_targets_in_order:
            loss_mask, loss_dice = self.mask_losses(pred_masks, target_masks, num_masks)
        else:
            per_layer = [self.mask_losses(pred[None], target_masks[target], num_masks)
                         for pred, target in zip(pred_masks, matches.target)]
            loss_mask, loss_dice = (torch.cat(losses) for losses in zip(*per_layer))
        return {"loss_mask": loss_mask, "loss_dice": loss_dice}

    def forward(self, outputs: dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """outputs: the head's dict; targets: per image "labels" (M,) and "masks" (M, H, W).

        All layers are matched in one call, so a training step waits for the GPU once for
        matching, not once per decoder layer.
        """
        num_masks = average_num_masks(targets, outputs["pred_masks"].device)
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        layers = [final] + list(outputs.get("aux_outputs", []))
        matches = LayerMatches.gather(self.matcher.match_layers(layers, targets), targets)
        per_layer = {}
        if "labels" in self.losses:
            labels = torch.cat([t["labels"] for t in targets])
            per_layer.update(self.loss_labels(layers, matches, labels))
        if "masks" in self.losses:
            target_masks = torch.cat([t["masks"] for t in targets])
            per_layer.update(self.loss_masks(layers, matches, target_masks, num_masks))
        losses = {}
        for name, values in per_layer.items():
            for i, value in enumerate(values.unbind()):
                losses[name if i == 0 else f"{name}_{i - 1}"] = value
        return losses

    def __repr__(self):
        return (f"SetCriterion(num_classes={self.num_classes}, matcher={self.matcher!r}, "
                f"losses={self.losses}, eos_coef={self.eos_coef}, weight_dict={self.weight_dict})")
