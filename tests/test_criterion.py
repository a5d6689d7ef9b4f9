"""SetCriterion computes all decoder layers at once; it must equal the per-layer official formulas,
also where an image has more targets than queries (layers then match different targets) and
where a batch has no target at all."""
import pytest
import torch
import torch.nn.functional as F

from mask_former.modeling.criterion import SetCriterion
from mask_former.modeling.losses import upsampled_mask_losses
from mask_former.modeling.matcher import HungarianMatcher

NUM_CLASSES, NUM_QUERIES, NUM_LAYERS = 6, 8, 3


def make_criterion() -> SetCriterion:
    weights = {"loss_ce": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}
    return SetCriterion(NUM_CLASSES, matcher=HungarianMatcher(1.0, 20.0, 1.0), weight_dict=weights,
                        eos_coef=0.1)


def random_outputs(batch_size: int, generator: torch.Generator) -> dict:
    def layer():
        return {"pred_logits": torch.randn(batch_size, NUM_QUERIES, NUM_CLASSES + 1, generator=generator),
                "pred_masks": torch.randn(batch_size, NUM_QUERIES, 8, 12, generator=generator)}
    outputs = layer()
    outputs["aux_outputs"] = [layer() for _ in range(NUM_LAYERS - 1)]
    return outputs


def random_targets(counts, generator: torch.Generator) -> list:
    return [{"labels": torch.randint(0, NUM_CLASSES, (count,), generator=generator),
             "masks": torch.rand(count, 32, 48, generator=generator) > 0.5} for count in counts]


def per_layer_reference(criterion: SetCriterion, outputs: dict, targets: list) -> dict:
    """The official criterion's loop: match, then cross-entropy and mask losses, layer by layer."""
    num_masks = max(sum(len(t["labels"]) for t in targets), 1)
    layers = [{k: v for k, v in outputs.items() if k != "aux_outputs"}] + outputs["aux_outputs"]
    losses = {}
    for i, layer in enumerate(layers):
        suffix = "" if i == 0 else f"_{i - 1}"
        indices = criterion.matcher(layer, targets)
        target_classes = torch.full(layer["pred_logits"].shape[:2], NUM_CLASSES, dtype=torch.int64)
        for b, (src, tgt) in enumerate(indices):
            target_classes[b, src] = targets[b]["labels"][tgt]
        losses["loss_ce" + suffix] = F.cross_entropy(layer["pred_logits"].transpose(1, 2),
                                                     target_classes, criterion.empty_weight)
        pred = torch.cat([layer["pred_masks"][b, src] for b, (src, _) in enumerate(indices)])
        target = torch.cat([targets[b]["masks"][tgt] for b, (_, tgt) in enumerate(indices)])
        focal, dice = upsampled_mask_losses(pred, target, torch.tensor(float(num_masks)))
        losses["loss_mask" + suffix], losses["loss_dice" + suffix] = focal, dice
    return losses


@pytest.mark.parametrize("counts", [(3, 5), (10, 2), (0, 0), (4, 0)],
                         ids=["usual", "more-targets-than-queries", "no-targets", "one-empty-image"])
def test_all_layers_at_once_equal_the_per_layer_losses(counts):
    generator = torch.Generator().manual_seed(sum(counts))
    criterion = make_criterion()
    outputs = random_outputs(len(counts), generator)
    targets = random_targets(counts, generator)
    losses = criterion(outputs, targets)
    expected = per_layer_reference(criterion, outputs, targets)
    assert losses.keys() == expected.keys()
    for name, value in expected.items():
        assert losses[name].shape == ()
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_gradients_flow_to_every_layer():
    generator = torch.Generator().manual_seed(0)
    outputs = random_outputs(2, generator)
    leaves = [outputs["pred_masks"], outputs["pred_logits"]] + [
        t for aux in outputs["aux_outputs"] for t in aux.values()]
    for leaf in leaves:
        leaf.requires_grad_(True)
    losses = make_criterion()(outputs, random_targets((3, 5), generator))
    sum(losses.values()).backward()
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)


def test_point_costs_do_not_depend_on_how_layers_are_chunked(monkeypatch):
    """Mask2Former's matching costs are batched products over chunks of layers; any chunking gives
    the per-image costs of one layer at a time."""
    import mask_former.modeling.matcher as matcher_module

    generator = torch.Generator().manual_seed(0)
    layers, batch, queries, points = 3, 3, 7, 50
    matcher = HungarianMatcher(2.0, 5.0, 5.0, num_points=points)
    logits = torch.randn(layers, batch, queries, NUM_CLASSES + 1, generator=generator, dtype=torch.float64)
    masks = torch.randn(layers, batch, queries, 16, 16, generator=generator, dtype=torch.float64)
    targets = [{"labels": torch.randint(0, NUM_CLASSES, (m,), generator=generator),
                "masks": torch.rand(m, 32, 32, generator=generator) > 0.5} for m in (2, 0, 4)]
    coords = torch.rand(layers, batch, points, 2, generator=generator, dtype=torch.float64)
    costs = []
    for per_chunk in (1, 2 * batch, 1000):  # one layer, two layers, all layers per product
        monkeypatch.setattr(matcher_module, "PRODUCTS_PER_CHUNK", per_chunk)
        costs.append(matcher._point_costs(logits, masks, targets, coords))
    for other in costs[1:]:
        assert torch.allclose(other, costs[0], rtol=1e-12, atol=1e-12)
    single = [matcher._point_costs(logits[i:i + 1], masks[i:i + 1], targets, coords[i:i + 1])
              for i in range(layers)]
    assert torch.allclose(torch.cat(single), costs[0], rtol=1e-12, atol=1e-12)
    assert costs[0][:, 0, :, 2:].abs().max() == 0  # image 0 against image 2's targets: unread zeros


def test_mask_costs_are_each_images_queries_against_its_own_targets():
    """MaskFormer's matching costs, all layers and images in one product each, hold the official
    per-image formulas: each image's queries against its own targets, downsampled to the masks'
    size (nearest). (Products per (layer, image) block, padded to the most targets of an image,
    do 8x fewer FLOPs but ran slower on an H200: 6.2 against 4.2 ms a step, file 16.)"""
    from mask_former.modeling.losses import pairwise_dice_cost, pairwise_focal_cost

    generator = torch.Generator().manual_seed(0)
    layers, batch, queries = 3, 3, 7
    matcher = HungarianMatcher(2.0, 20.0, 1.0)
    logits = torch.randn(layers, batch, queries, NUM_CLASSES + 1, generator=generator,
                         dtype=torch.float64)
    masks = torch.randn(layers, batch, queries, 8, 12, generator=generator, dtype=torch.float64)
    targets = [{"labels": torch.randint(0, NUM_CLASSES, (m,), generator=generator),
                "masks": torch.rand(m, 32, 48, generator=generator) > 0.5} for m in (2, 0, 4)]
    cost = matcher._mask_costs(logits, masks, targets)
    assert cost.shape == (layers, batch, queries, 6)
    start = 0
    for b, t in enumerate(targets):
        end = start + len(t["labels"])
        tgt = F.interpolate(t["masks"][:, None].double(), size=(8, 12), mode="nearest").flatten(1)
        for layer in range(layers):
            pred = masks[layer, b].flatten(1)
            expected = (20.0 * pairwise_focal_cost(pred, tgt)
                        - 2.0 * logits[layer, b].softmax(-1)[:, t["labels"]]
                        + pairwise_dice_cost(pred, tgt))
            torch.testing.assert_close(cost[layer, b, :, start:end], expected, rtol=1e-12,
                                       atol=1e-12)
        start = end


def _official_focal_cost(inputs, targets, alpha=0.25, gamma=2.0):
    """The official matcher's focal cost: two products, over target values 1 and 0."""
    probs = inputs.sigmoid()
    pos = alpha * (1 - probs) ** gamma * F.binary_cross_entropy_with_logits(
        inputs, torch.ones_like(inputs), reduction="none")
    neg = (1 - alpha) * probs ** gamma * F.binary_cross_entropy_with_logits(
        inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / inputs.shape[1]


def _official_sigmoid_ce_cost(inputs, targets):
    """Mask2Former's official point cost: two products, over target values 1 and 0."""
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / inputs.shape[1]


@pytest.mark.parametrize("scale", [1.0, 12.0], ids=["unsure", "confident"])
def test_one_product_costs_equal_the_official_two_product_costs(scale):
    """The focal and sigmoid cross-entropy costs as one matrix product plus row sums hold the
    official two-product expansions: up to float64 rounding in float64, within float32 rounding
    in float32, also for confident logits (large row sums of which a target's share is
    subtracted)."""
    from mask_former.modeling.losses import pairwise_focal_cost, pairwise_sigmoid_ce_cost

    generator = torch.Generator().manual_seed(0)
    inputs = scale * torch.randn(20, 4096, generator=generator, dtype=torch.float64)
    targets = (torch.rand(7, 4096, generator=generator) > 0.3).double()
    targets[0] = (inputs[0] > 0).double()  # a query that predicts target 0 well
    for ours, official in ((pairwise_focal_cost, _official_focal_cost),
                           (pairwise_sigmoid_ce_cost, _official_sigmoid_ce_cost)):
        expected = official(inputs, targets)
        torch.testing.assert_close(ours(inputs, targets), expected, rtol=1e-10, atol=1e-10)
        # float32: within a few times the official expansion's own float32 error
        official_error = (official(inputs.float(), targets.float()).double() - expected).abs().max()
        error = (ours(inputs.float(), targets.float()).double() - expected).abs().max()
        assert error <= 4 * official_error + 1e-7, (ours.__name__, float(error), float(official_error))
