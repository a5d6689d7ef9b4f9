"""MaskFormer's set criterion (DETR's, with mask losses): for every decoder layer, match queries to
targets with the Hungarian algorithm, then compute each loss on the matched pairs."""
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.projects.point_rend.point_features import point_sample
from detectron2.utils.comm import get_world_size
from torch import nn

from .losses import dice_loss, layerwise_mask_losses, sigmoid_ce_loss
from .matcher import HungarianMatcher, LayerMatches


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


class RandomPoints(NamedTuple):
    """Mask2Former's random points in [0, 1]^2 for L layers, drawn before matching in the order
    the official code draws them, layer by layer (the final layer first): the matcher's points,
    image by image, then the mask loss's two draws over the N matched pairs (in the matcher's
    order). Drawing them up front lets all layers be matched and lossed together while the
    numbers stay the official ones for a given seed."""

    matching: torch.Tensor  # (L, B, P, 2): shared by all masks of an image
    oversampled: torch.Tensor  # (L, N, P * oversample_ratio, 2): candidates for uncertain points
    uniform: torch.Tensor  # (L, N, P - P * importance_sample_ratio, 2)

    @staticmethod
    def draw(num_layers: int, num_images: int, num_pairs: int, num_points: int,
             oversample_ratio: float, importance_sample_ratio: float,
             device: torch.device) -> "RandomPoints":
        num_oversampled = int(num_points * oversample_ratio)
        num_uniform = num_points - int(importance_sample_ratio * num_points)
        matching, oversampled, uniform = [], [], []
        for _ in range(num_layers):
            matching.append(torch.cat([torch.rand(1, num_points, 2, device=device)
                                       for _ in range(num_images)]))
            oversampled.append(torch.rand(num_pairs, num_oversampled, 2, device=device))
            # detectron2's get_uncertain_point_coords_with_randomness draws none for 0
            uniform.append(torch.rand(num_pairs, num_uniform, 2, device=device) if num_uniform
                           else torch.empty(num_pairs, 0, 2, device=device))
        return RandomPoints(torch.stack(matching), torch.stack(oversampled), torch.stack(uniform))


class SetCriterion(nn.Module):
    """The losses of MaskFormer and Mask2Former, for the final decoder layer and (with
    "aux_outputs") every earlier one, as DETR's criterion: for each layer,

      1. the matcher pairs queries with targets (`HungarianMatcher`);
      2. each loss in `losses` is computed on those pairs:
         - "labels": cross-entropy over K+1 classes; unmatched queries target "no object", whose
           class weight is `eos_coef`;
         - "masks" (MaskFormer): sigmoid focal and dice losses of the matched masks, upsampled to
           the targets' size;
         - "point_masks" (Mask2Former): sigmoid cross-entropy and dice losses on `num_points`
           points per matched mask, most of them where the prediction is most uncertain
           (PointRend's importance sampling: `oversample_ratio`, `importance_sample_ratio`);
         the mask losses are summed over pairs and divided by the number of targets.

    Returns unweighted losses named as DETR's: "loss_ce" for the final layer, "loss_ce_0",
    "loss_ce_1", ... for the earlier ones; `weight_dict` holds the weights the meta-architecture
    applies.

    How it is computed: the layers are processed together rather than in a loop. The matcher
    matches all of them in one call, whose costs reach the host in one transfer (a training step
    waits for the GPU once, not once per layer), and each loss is written for a stack of L layers
    and returns (L,) values. Adding a loss is one method `loss_<name>(layers, targets, matches,
    num_masks, points) -> {key: (L,) tensor}` and its name in `losses`.
    """

    @configurable
    def __init__(self, num_classes: int, *, matcher: nn.Module, weight_dict: Dict[str, float],
                 eos_coef: float, losses: Sequence[str] = ("labels", "masks"),
                 num_points: int = 0, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75):
        """
        Args:
            num_classes: K, without "no object".
            matcher: computes the pairs; its `layer_matches(layers, targets, point_coords)`
                matches several layers at once and returns LayerMatches.
            weight_dict: loss name -> weight, for every layer's loss names.
            eos_coef: cross-entropy weight of the "no object" class.
            losses: which losses to compute, names of `loss_<name>` methods.
            num_points: points per mask for matching and "point_masks" (Mask2Former); 0: none.
            oversample_ratio, importance_sample_ratio: "point_masks" samples
                num_points * oversample_ratio candidates and keeps the
                num_points * importance_sample_ratio most uncertain, the rest uniform.
        """
        super().__init__()
        unknown = [loss for loss in losses if not callable(getattr(self, f"loss_{loss}", None))]
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {unknown}")
        if "point_masks" in losses and num_points <= 0:
            raise ValueError("SetCriterion: the 'point_masks' loss needs num_points > 0 "
                             "(MODEL.MASK_FORMER.TRAIN_NUM_POINTS)")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)
        # (L, N, h, w) matched mask logits, (N, H, W) targets, num_masks -> (L,) focal, (L,) dice
        # losses. One layer at a time; the acceleration step (mask_former.engine) may swap in a
        # fused equivalent.
        self.mask_losses: Callable = layerwise_mask_losses

    @classmethod
    def from_config(cls, cfg, num_classes: int):
        """MaskFormer's losses, or Mask2Former's point-sampled ones where
        MODEL.MASK_FORMER.TRAIN_NUM_POINTS > 0 (as Mask2Former's configs set it)."""
        mf = cfg.MODEL.MASK_FORMER
        layer_weights = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT,
                         "loss_dice": mf.DICE_WEIGHT}
        weight_dict = dict(layer_weights)
        if mf.DEEP_SUPERVISION:
            for i in range(mf.DEC_LAYERS - 1):
                weight_dict.update({f"{k}_{i}": v for k, v in layer_weights.items()})
        return {
            "num_classes": num_classes,
            "matcher": HungarianMatcher(cfg),
            "weight_dict": weight_dict,
            "eos_coef": mf.NO_OBJECT_WEIGHT,
            "losses": ["labels", "point_masks" if mf.TRAIN_NUM_POINTS > 0 else "masks"],
            "num_points": mf.TRAIN_NUM_POINTS,
            "oversample_ratio": mf.OVERSAMPLE_RATIO,
            "importance_sample_ratio": mf.IMPORTANCE_SAMPLE_RATIO,
        }

    def loss_labels(self, layers: List[dict], targets: List[Dict[str, torch.Tensor]],
                    matches: LayerMatches, num_masks: torch.Tensor,
                    points: Optional[RandomPoints]) -> Dict[str, torch.Tensor]:
        """Cross-entropy over K+1 classes per layer, (L,); unmatched queries target "no object"."""
        labels = torch.cat([t["labels"] for t in targets])  # (T,) the batch's targets
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

    def loss_masks(self, layers: List[dict], targets: List[Dict[str, torch.Tensor]],
                   matches: LayerMatches, num_masks: torch.Tensor,
                   points: Optional[RandomPoints]) -> Dict[str, torch.Tensor]:
        """Focal and dice losses of the matched masks per layer, (L,) each, the predictions
        upsampled to the targets' (H, W)."""
        # Targets are already padded to one size per batch by the meta-architecture.
        target_masks = torch.cat([t["masks"] for t in targets])  # (T, H, W)
        pred_masks = self._matched_masks(layers, matches)  # (L, N, h, w)
        if matches.all_targets_in_order:
            loss_mask, loss_dice = self.mask_losses(pred_masks, target_masks, num_masks)
        else:
            per_layer = [self.mask_losses(pred[None], target_masks[target], num_masks)
                         for pred, target in zip(pred_masks, matches.target)]
            loss_mask, loss_dice = (torch.cat(losses) for losses in zip(*per_layer))
        return {"loss_mask": loss_mask, "loss_dice": loss_dice}

    def loss_point_masks(self, layers: List[dict], targets: List[Dict[str, torch.Tensor]],
                         matches: LayerMatches, num_masks: torch.Tensor,
                         points: RandomPoints) -> Dict[str, torch.Tensor]:
        """Sigmoid cross-entropy and dice losses on sampled points of the matched masks per
        layer, (L,) each (Mask2Former); no upsampling: points are in normalised coordinates."""
        pred_masks = self._matched_masks(layers, matches)  # (L, N, h, w)
        num_layers, num_pairs = pred_masks.shape[:2]
        target_masks = torch.cat([t["masks"] for t in targets]).to(pred_masks)  # (T, H, W)
        with torch.no_grad():
            coords = self._uncertain_points(pred_masks, matches, points)  # (L, N, P, 2)
            # Each target's points of every layer at once: (T, 1, L * P) -> (L, N, P).
            per_target = torch.zeros(target_masks.shape[0], num_layers, coords.shape[2], 2,
                                     dtype=coords.dtype, device=coords.device)
            per_target[matches.target, torch.arange(num_layers, device=coords.device)[:, None]] = coords
            labels = point_sample(target_masks[:, None], per_target.flatten(1, 2),
                                  align_corners=False).view(-1, num_layers, coords.shape[2])
            labels = labels.transpose(0, 1)[torch.arange(num_layers, device=coords.device)[:, None],
                                            matches.target]
        logits = point_sample(pred_masks.flatten(0, 1)[:, None], coords.flatten(0, 1),
                              align_corners=False).view(num_layers, num_pairs, -1)
        logits = logits.float()
        return {"loss_mask": sigmoid_ce_loss(logits, labels, num_masks),
                "loss_dice": dice_loss(logits, labels, num_masks)}

    def _uncertain_points(self, pred_masks: torch.Tensor, matches: LayerMatches,
                          points: RandomPoints) -> torch.Tensor:
        """PointRend's importance sampling (detectron2's
        get_uncertain_point_coords_with_randomness, uncertainty -|logit|) for (L, N, h, w)
        masks: the num_points * importance_sample_ratio most uncertain of the oversampled
        candidates, then the uniform ones. Returns (L, N, num_points, 2)."""
        num_layers, num_pairs = pred_masks.shape[:2]
        layer = torch.arange(num_layers, device=pred_masks.device)[:, None]
        # The random points were drawn per pair in the matcher's order.
        candidates = points.oversampled[layer, matches.matcher_order]  # (L, N, S, 2)
        uniform = points.uniform[layer, matches.matcher_order]
        logits = point_sample(pred_masks.flatten(0, 1)[:, None], candidates.flatten(0, 1),
                              align_corners=False)[:, 0]  # (L * N, S)
        num_uncertain = int(self.importance_sample_ratio * self.num_points)
        keep = torch.topk(-logits.abs(), k=num_uncertain, dim=1)[1]
        uncertain = torch.gather(candidates.flatten(0, 1), 1, keep[..., None].expand(-1, -1, 2))
        return torch.cat([uncertain.view(num_layers, num_pairs, num_uncertain, 2), uniform], dim=2)

    @staticmethod
    def _matched_masks(layers: List[dict], matches: LayerMatches) -> torch.Tensor:
        """The matched predictions of every layer, (L, N, h, w)."""
        return torch.stack([layer["pred_masks"][batch, query] for layer, batch, query
                            in zip(layers, matches.batch, matches.query)])

    def forward(self, outputs: dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """outputs: the head's dict; targets: per image "labels" (M,) and "masks" (M, H, W)."""
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        layers = [final] + list(outputs.get("aux_outputs", []))
        device = outputs["pred_masks"].device
        points = None
        if self.num_points > 0:
            num_queries = final["pred_logits"].shape[1]
            num_pairs = sum(min(num_queries, len(t["labels"])) for t in targets)
            points = RandomPoints.draw(len(layers), len(targets), num_pairs, self.num_points,
                                       self.oversample_ratio, self.importance_sample_ratio, device)
        matches = self.matcher.layer_matches(
            layers, targets, None if points is None else points.matching)
        num_masks = average_num_masks(targets, device)
        per_layer = {}
        for loss in self.losses:
            per_layer.update(getattr(self, f"loss_{loss}")(layers, targets, matches, num_masks, points))
        losses = {}
        for name, values in per_layer.items():
            for i, value in enumerate(values.unbind()):
                losses[name if i == 0 else f"{name}_{i - 1}"] = value
        return losses

    def __repr__(self):
        return (f"SetCriterion(num_classes={self.num_classes}, matcher={self.matcher!r}, "
                f"losses={self.losses}, eos_coef={self.eos_coef}, weight_dict={self.weight_dict}, "
                f"num_points={self.num_points})")
