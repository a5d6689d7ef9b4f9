"""Hungarian matching of predicted masks to ground-truth segments (DETR's matcher, with mask costs)."""
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment
from torch import nn

from .losses import pairwise_dice_cost, pairwise_focal_and_dice_costs, pairwise_sigmoid_ce_cost

# Per layer, per image: (query indices, target indices), each int64 of length min(Q, M).
Matches = List[Tuple[torch.Tensor, torch.Tensor]]


# Mask2Former's point costs: (layer, image) problems per batched product (see _point_costs).
PRODUCTS_PER_CHUNK = 40


class LayerMatches(NamedTuple):
    """The matched (query, target) pairs of L decoder layers, N pairs in every layer, as index
    tensors on the device, so that each loss gathers the pairs of all layers at once.

    Each layer's pairs are sorted by target, so where every layer matched every target (each image
    has no more targets than queries, the usual case) all layers pair the same target masks in
    the same order and the mask losses of all layers read one target tensor.
    """

    batch: torch.Tensor  # (L, N) image index, on the targets' device
    query: torch.Tensor  # (L, N) query index
    target: torch.Tensor  # (L, N) index into the batch's concatenated targets
    # (L, N) each pair's position in the matcher's order (image by image, queries ascending),
    # the order in which the official code draws per-pair random points
    matcher_order: torch.Tensor
    all_targets_in_order: bool  # target[l] == arange(number of targets) for every layer l

    @staticmethod
    def gather(layer_matches: List[Matches], targets) -> "LayerMatches":
        """From the matcher's per-layer, per-image indices on the host; one host-to-device
        transfer."""
        sizes = [len(t["labels"]) for t in targets]
        offsets = torch.tensor([0] + sizes).cumsum(0)
        rows = []  # per layer: image, query, index into the batch's concatenated targets
        for matches in layer_matches:
            batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(matches)])
            query = torch.cat([src for src, _ in matches])
            target = torch.cat([tgt + offsets[b] for b, (_, tgt) in enumerate(matches)])
            order = torch.argsort(target, stable=True)
            rows.append(torch.stack([batch[order], query[order], target[order], order]))
        host = torch.stack(rows)  # (L, 4, N): every layer matches min(Q, M) pairs per image
        num_targets = sum(sizes)
        in_order = host.shape[-1] == num_targets and bool(
            (host[:, 2] == torch.arange(num_targets)).all())
        batch, query, target, matcher_order = _to_device(host, targets).unbind(1)
        return LayerMatches(batch, query, target, matcher_order, in_order)

    @staticmethod
    def from_queries(query: torch.Tensor, targets) -> "LayerMatches":
        """From the query of every target of the batch in every layer, (L, T) on the device
        (every target matched: no image has more targets than queries), without the host
        reading the device."""
        sizes = [len(t["labels"]) for t in targets]
        num_layers, num_targets = query.shape
        # Built in Python: CPU repeat_interleave starts a team of OpenMP threads (one per core)
        # even for a few numbers, whose spinning starved the loader's workers (issue 18, sixth
        # round: 38 threads in the training process instead of 23, 149-172 img/s instead of 228).
        image = [b for b, size in enumerate(sizes) for _ in range(size)]
        starts = [sum(sizes[:b]) for b in range(len(sizes))]
        first = [starts[b] for b in image]  # each target's image's first place
        image, first = _to_device(torch.tensor([image, first], dtype=torch.int64), targets)
        # A pair's place in the matcher's order: its image's first place plus how many of the
        # image's queries come before its own.
        same_image = image[:, None] == image[None, :]  # (T, T)
        earlier = ((query[:, None, :] < query[:, :, None]) & same_image).sum(-1)  # (L, T)
        batch = image.expand(num_layers, -1)
        target = torch.arange(num_targets, device=query.device).expand(num_layers, -1)
        return LayerMatches(batch, query, target, first + earlier, True)


def _to_device(host: torch.Tensor, targets) -> torch.Tensor:
    """A host tensor on the targets' device, copied without the host waiting for the GPU."""
    device = targets[0]["labels"].device
    if device.type == "cuda":
        host = host.pin_memory()  # so that the copy is queued, not waited for
    return host.to(device, non_blocking=True)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising class + mask + dice costs.

    The class cost is -p(target class). The mask costs come in two kinds:
      - num_points == 0 (MaskFormer): focal and dice costs on whole masks, the targets
        downsampled (nearest) to the prediction resolution;
      - num_points > 0 (Mask2Former): sigmoid cross-entropy and dice costs on `num_points`
        uniformly random points shared by all masks of an image (`point_coords`).
    The costs of the whole batch (and of several decoder layers, `match_layers`) are computed on
    the predictions' device and brought to the host in one transfer; only the assignment itself
    runs on the CPU, with scipy's `linear_sum_assignment`, or on the GPU with the same algorithm
    and result (`triton`, `layer_matches`).
    """

    @configurable
    def __init__(self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0,
                 num_points: int = 0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points
        # Solve the assignment on the GPU (Triton) in `layer_matches`; set by the acceleration
        # step (mask_former.engine, ACCELERATION.TRITON_MATCHING).
        self.triton = False
        # MaskFormer's pairwise focal and dice costs: the acceleration step swaps in a fused
        # (compiled) equivalent on GPUs (ACCELERATION.FUSED_MASK_LOSSES). Mask2Former's point
        # costs stay eager: compiled, they saved nothing measurable and took 0.16 GiB more
        # (docs/benchmarks.md, seventh round).
        self.mask_costs: Callable = pairwise_focal_and_dice_costs

    @classmethod
    def from_config(cls, cfg):
        mf = cfg.MODEL.MASK_FORMER
        return {"cost_class": mf.CLASS_WEIGHT, "cost_mask": mf.MASK_WEIGHT,
                "cost_dice": mf.DICE_WEIGHT, "num_points": mf.TRAIN_NUM_POINTS}

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]],
                point_coords: Optional[torch.Tensor] = None) -> Matches:
        """outputs: "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, h, w); targets: per image
        "labels" (M,) and "masks" (M, H, W); point_coords: (B, P, 2) in [0, 1] with num_points.

        Returns per image (query indices, target indices), each int64 of length min(Q, M).
        """
        coords = None if point_coords is None else point_coords[None]
        return self.match_layers([outputs], targets, coords)[0]

    @torch.no_grad()
    def match_layers(self, layer_outputs: List[Dict[str, torch.Tensor]],
                     targets: List[Dict[str, torch.Tensor]],
                     point_coords: Optional[torch.Tensor] = None) -> List[Matches]:
        """Matches the outputs of L decoder layers against the same targets at once, on the host.

        point_coords: (L, B, P, 2), each image's points in each layer (num_points > 0 only).
        Returns, per layer, what `forward` returns.
        """
        cost = self.layer_costs(layer_outputs, targets, point_coords)
        return _assign_on_host(cost, [len(t["labels"]) for t in targets])

    @torch.no_grad()
    def layer_matches(self, layer_outputs: List[Dict[str, torch.Tensor]],
                      targets: List[Dict[str, torch.Tensor]],
                      point_coords: Optional[torch.Tensor] = None) -> LayerMatches:
        """What `match_layers` matches, as the criterion takes it: index tensors on the device.

        With `triton` set, costs on a GPU and no image with more targets than queries, the
        assignment is solved there (assignment_triton.py: scipy's algorithm, its result
        exactly) and the step never waits for the GPU; otherwise on the host.
        """
        cost = self.layer_costs(layer_outputs, targets, point_coords)
        sizes = [len(t["labels"]) for t in targets]
        if self.triton and cost.is_cuda and max(sizes, default=0) <= cost.shape[2]:
            from .assignment_triton import queries_of_targets
            return LayerMatches.from_queries(queries_of_targets(cost, sizes), targets)
        return LayerMatches.gather(_assign_on_host(cost, sizes), targets)

    def layer_costs(self, layer_outputs: List[Dict[str, torch.Tensor]],
                    targets: List[Dict[str, torch.Tensor]],
                    point_coords: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The costs of every query against every target of the batch in every layer,
        (L, B, Q, sum M) float32 on the predictions' device; only each image's block against its
        own targets is read."""
        logits = torch.stack([o["pred_logits"] for o in layer_outputs]).float()  # (L, B, Q, K+1)
        masks = torch.stack([o["pred_masks"] for o in layer_outputs]).float()  # (L, B, Q, h, w)
        if self.num_points > 0 and point_coords is None:
            raise ValueError("HungarianMatcher with num_points > 0 needs point_coords")
        # float32 costs also under autocast: near-equal costs decide the assignment
        with torch.autocast(masks.device.type, enabled=False):
            if self.num_points > 0:
                return self._point_costs(logits, masks, targets, point_coords)
            return self._mask_costs(logits, masks, targets)

    def _class_cost(self, logits: torch.Tensor, targets) -> torch.Tensor:
        """(L, B, Q, K+1) -> (L, B, Q, sum M): -p(class of each target of the batch)."""
        labels = torch.cat([t["labels"] for t in targets])
        return -logits.softmax(-1)[..., labels]

    def _mask_costs(self, logits: torch.Tensor, masks: torch.Tensor, targets) -> torch.Tensor:
        """MaskFormer's costs of every query against every target of the batch, (L, B, Q, sum M)."""
        shape = (*masks.shape[:3], -1)
        tgt = torch.cat([
            F.interpolate(t["masks"].to(masks)[:, None], size=masks.shape[-2:], mode="nearest")[:, 0]
            for t in targets
        ]).flatten(1)  # (sum M, h * w)
        pred = masks.flatten(3).flatten(0, 2)  # (L * B * Q, h * w)
        # Every query against the whole batch's targets: B times the products each image needs,
        # but one large product; per-image blocks (batched, padded) ran slower on an H200
        # (docs/benchmarks.md, seventh round).
        focal_cost, dice_cost = self.mask_costs(pred, tgt)
        return (
            self.cost_mask * focal_cost.view(shape)
            + self.cost_class * self._class_cost(logits, targets)
            + self.cost_dice * dice_cost.view(shape)
        )

    def _point_costs(self, logits: torch.Tensor, masks: torch.Tensor, targets,
                     point_coords: torch.Tensor) -> torch.Tensor:
        """Mask2Former's costs on each image's random points, (L, B, Q, sum M); the blocks of an
        image against another image's targets (never read) are left at 0."""
        num_layers, batch_size, num_queries = masks.shape[:3]
        sizes = [len(t["labels"]) for t in targets]
        # All queries of a layer and image read the same points: queries as channels.
        pred = point_sample(masks.flatten(0, 1), point_coords.flatten(0, 1).to(masks),
                            align_corners=False).view(num_layers, batch_size, num_queries, -1)
        class_cost = self._class_cost(logits, targets)
        cost = torch.zeros_like(class_cost)
        if max(sizes, default=0) == 0:
            return cost
        # Each image's targets at its points, padded to the most targets of an image, so that the
        # costs of all layers and images are one batched product each (L * B products of
        # (Q, P) x (P, M_max)) rather than per-image products too small to fill the GPU.
        tgt = pred.new_zeros(num_layers, batch_size, max(sizes), pred.shape[-1])
        for b, (t, size) in enumerate(zip(targets, sizes)):
            if size:
                tgt_masks = t["masks"].to(masks)[None].expand(num_layers, -1, -1, -1)
                tgt[:, b, :size] = point_sample(tgt_masks, point_coords[:, b].to(masks),
                                                align_corners=False)
        # Layers in chunks: each product still batches enough (layer, image) problems to fill
        # the GPU, while the point-sized intermediates exist for a chunk only.
        mask_cost = pred.new_empty(*pred.shape[:3], tgt.shape[2])  # (L, B, Q, M_max)
        dice_cost = torch.empty_like(mask_cost)
        step = max(1, PRODUCTS_PER_CHUNK // batch_size)
        for first in range(0, num_layers, step):
            chunk = slice(first, first + step)
            mask_cost[chunk] = pairwise_sigmoid_ce_cost(pred[chunk], tgt[chunk])
            dice_cost[chunk] = pairwise_dice_cost(pred[chunk], tgt[chunk])
        start = 0
        for b, size in enumerate(sizes):
            end = start + size
            cost[:, b, :, start:end] = (  # (L, Q, M_b), summed in the official order
                self.cost_mask * mask_cost[:, b, :, :size]
                + self.cost_class * class_cost[:, b, :, start:end]
                + self.cost_dice * dice_cost[:, b, :, :size])
            start = end
        return cost

    def __repr__(self):
        return (f"HungarianMatcher(cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
                f"cost_dice={self.cost_dice}, num_points={self.num_points})")


def _assign_on_host(cost: torch.Tensor, sizes: List[int]) -> List[Matches]:
    """scipy's assignment of each image's (Q, M_b) block of (L, B, Q, sum M) costs, per layer and
    image; the costs reach the host in one transfer."""
    cost = cost.cpu()
    matches = []
    for layer_cost in cost:
        layer_matches = []
        for b, block in enumerate(layer_cost.split(sizes, dim=-1)):
            rows, cols = linear_sum_assignment(block[b].numpy())
            layer_matches.append((torch.as_tensor(rows, dtype=torch.int64),
                                  torch.as_tensor(cols, dtype=torch.int64)))
        matches.append(layer_matches)
    return matches
