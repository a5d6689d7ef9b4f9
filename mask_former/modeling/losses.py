"""Mask losses shared by the matcher (as pairwise costs) and the criterion (on matched pairs)."""
import torch
import torch.nn.functional as F

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss summed over N matched pairs and divided by num_masks.

    inputs: (N, P) mask logits; targets: (N, P) binary masks.
    """
    probs = inputs.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float,
                       alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Focal loss (RetinaNet) averaged over P pixels, summed over N pairs, divided by num_masks.

    inputs: (N, P) mask logits; targets: (N, P) binary masks.
    """
    probs = inputs.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def pairwise_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction against every target: (N, P), (M, P) -> (N, M)."""
    probs = inputs.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_focal_cost(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA,
                        gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Pixel-averaged focal loss of every prediction against every target: (N, P), (M, P) -> (N, M).

    Expands the focal loss over target values 1 and 0, so two matrix products replace an
    (N, M, P) tensor.
    """
    num_pixels = inputs.shape[1]
    probs = inputs.sigmoid()
    # binary_cross_entropy_with_logits(x, 1) = softplus(-x), (x, 0) = softplus(x)
    focal_pos = ((1 - probs) ** gamma) * F.softplus(-inputs)
    focal_neg = (probs ** gamma) * F.softplus(inputs)
    if alpha >= 0:
        focal_pos = focal_pos * alpha
        focal_neg = focal_neg * (1 - alpha)
    loss = focal_pos @ targets.T + focal_neg @ (1 - targets).T
    return loss / num_pixels
