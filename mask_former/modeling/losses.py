"""Mask losses shared by the matcher (as pairwise costs) and the criterion (on matched pairs)."""
from typing import Callable, Tuple

import torch
import torch.nn.functional as F

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss summed over N matched pairs and divided by num_masks.

    inputs: (..., N, P) mask logits; targets: (N, P) binary masks (broadcast over the leading
    dims). Returns (...): a scalar for (N, P) inputs, one loss per layer for (L, N, P).
    """
    probs = inputs.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum(-1) / num_masks


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sigmoid cross-entropy averaged over P points, summed over N pairs, divided by num_masks
    (Mask2Former's mask loss). inputs, targets: (..., N, P). Returns (...)."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(-1).sum(-1) / num_masks


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float,
                       alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Focal loss (RetinaNet) averaged over P pixels, summed over N pairs, divided by num_masks.

    inputs: (..., N, P) mask logits; targets: (N, P) binary masks. Returns (...), as `dice_loss`.
    """
    targets = targets.expand_as(inputs)  # a view: one set of targets for every layer
    probs = inputs.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(-1).sum(-1) / num_masks


def pairwise_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction against every target: (..., N, P), (..., M, P) -> (..., N, M)."""
    probs = inputs.sigmoid()
    numerator = 2 * probs @ targets.transpose(-1, -2)
    denominator = probs.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Point-averaged sigmoid cross-entropy of every prediction against every target:
    (..., N, P), (..., M, P) -> (..., N, M), expanded over target values 1 and 0 into one matrix
    product and row sums (Mask2Former's matching cost)."""
    # binary_cross_entropy_with_logits(x, 1) = softplus(-x), (x, 0) = softplus(x), so the official
    # softplus(-x) @ t + softplus(x) @ (1 - t) is (softplus(-x) - softplus(x)) @ t + the row sums
    # of softplus(x), and softplus(-x) - softplus(x) = -x: one matrix product instead of two
    loss = -inputs @ targets.transpose(-1, -2) + F.softplus(inputs).sum(-1)[..., :, None]
    return loss / inputs.shape[-1]


def pairwise_focal_cost(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA,
                        gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Pixel-averaged focal loss of every prediction against every target: (N, P), (M, P) -> (N, M).

    Expands the focal loss over target values 1 and 0, so matrix products replace an (N, M, P)
    tensor: the official pos @ t + neg @ (1 - t) as (pos - neg) @ t + the row sums of neg, one
    product instead of two (the same sum; float rounding aside).
    """
    num_pixels = inputs.shape[1]
    probs = inputs.sigmoid()
    # binary_cross_entropy_with_logits(x, 1) = softplus(-x), (x, 0) = softplus(x)
    focal_pos = ((1 - probs) ** gamma) * F.softplus(-inputs)
    focal_neg = (probs ** gamma) * F.softplus(inputs)
    if alpha >= 0:
        focal_pos = focal_pos * alpha
        focal_neg = focal_neg * (1 - alpha)
    loss = (focal_pos - focal_neg) @ targets.T + focal_neg.sum(-1)[:, None]
    return loss / num_pixels


def pairwise_focal_and_dice_costs(inputs: torch.Tensor, targets: torch.Tensor
                                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """MaskFormer's matching costs on pixels: (N, P), (M, P) -> focal (N, M), dice (N, M)."""
    return pairwise_focal_cost(inputs, targets), pairwise_dice_cost(inputs, targets)


def bilinear_upsample(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(N, h, w) -> (N, H, W): bilinear, align_corners=False (the official losses' upsampling)."""
    return F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def upsampled_mask_losses(pred_masks: torch.Tensor, target_masks: torch.Tensor,
                          num_masks: torch.Tensor, upsample: Callable = bilinear_upsample
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Focal and dice losses of N matched masks, the predictions upsampled to the targets' size.

    pred_masks: (N, h, w) mask logits, or (L, N, h, w) for L decoder layers matched to the same
    targets; target_masks: (N, H, W) binary masks (any dtype); upsample: (N', h, w), (H, W) ->
    (N', H, W), `bilinear_upsample` or an equal function (the fused losses' own).
    Returns (focal loss, dice loss), each summed over the pairs and divided by num_masks:
    scalars, or (L,) for (L, N, h, w) predictions.
    """
    leading = pred_masks.shape[:-2]
    # float32 losses also under autocast: sums over many pixels need the precision
    pred_masks = upsample(pred_masks.float().flatten(0, -3), target_masks.shape[-2:])
    pred_masks = pred_masks.view(*leading, target_masks.shape[-2:].numel())
    target_masks = target_masks.flatten(1).float()
    return (sigmoid_focal_loss(pred_masks, target_masks, num_masks),
            dice_loss(pred_masks, target_masks, num_masks))


def layerwise_mask_losses(pred_masks: torch.Tensor, target_masks: torch.Tensor,
                          num_masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """`upsampled_mask_losses` of (L, N, h, w) predictions, one layer at a time: (L,), (L,).

    The same numbers as all layers at once, but the full-resolution intermediates exist for one
    layer only. The acceleration step swaps in a fused (compiled) equivalent on GPUs
    (mask_former.engine, ACCELERATION.FUSED_MASK_LOSSES).
    """
    per_layer = [upsampled_mask_losses(p, target_masks, num_masks) for p in pred_masks]
    return tuple(torch.stack(losses) for losses in zip(*per_layer))
