"""Mask2Former's point-sampled criterion and its inference, against the official Mask2Former.

The fixture (../shared/reference/m2f_universal_r50_tiny.pt) holds the official head's outputs on
a batch, the seeded losses of the same batch and the semantic, panoptic and instance results;
the head's outputs in evaluation equal those of training here (no dropout, frozen BatchNorm), so
the criterion and the post-processing are checked on them alone, apart from the model.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import Instances

from conftest import shared_path
from helpers import config_from_yaml
from mask_former.modeling.criterion import SetCriterion
from mask_former.modeling.postprocessing import (
    crop_and_resize,
    instance_inference,
    panoptic_inference,
    semantic_inference,
)

pytestmark = pytest.mark.needs_shared


@pytest.fixture(scope="module")
def reference():
    return torch.load(shared_path("reference", "m2f_universal_r50_tiny.pt"), weights_only=False)


@pytest.fixture(scope="module")
def cfg(reference):
    return config_from_yaml(reference["config_yaml"])


def padded_size(batch, divisibility=32):
    height = max(x["image"].shape[1] for x in batch)
    width = max(x["image"].shape[2] for x in batch)
    return math.ceil(height / divisibility) * divisibility, math.ceil(width / divisibility) * divisibility


def targets_of(batch):
    """The meta-architecture's targets: gt masks padded to the batch's padded size."""
    height, width = padded_size(batch)
    targets = []
    for x in batch:
        masks = x["instances"].gt_masks
        masks = getattr(masks, "tensor", masks)
        padded = masks.new_zeros((masks.shape[0], height, width))
        padded[:, : masks.shape[1], : masks.shape[2]] = masks
        targets.append({"labels": x["instances"].gt_classes, "masks": padded})
    return targets


def test_point_sampled_losses_equal_the_official_ones(reference, cfg):
    criterion = SetCriterion(cfg, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    assert criterion.losses == ["labels", "point_masks"]
    torch.manual_seed(reference["train_seed"])  # the random points, drawn in the official order
    losses = criterion(reference["head_outputs"], targets_of(reference["batch"]))
    weighted = {k: v * criterion.weight_dict[k] for k, v in losses.items()}
    assert weighted.keys() == reference["losses"].keys()
    for name, expected in reference["losses"].items():
        torch.testing.assert_close(weighted[name], torch.tensor(expected), rtol=1e-5, atol=0, msg=name)
    torch.testing.assert_close(sum(weighted.values()), torch.tensor(reference["total_loss"]),
                               rtol=1e-5, atol=0)


def test_point_sampled_matching_equals_the_official_one(reference, cfg):
    criterion = SetCriterion(cfg, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    outputs = {k: v for k, v in reference["head_outputs"].items() if k != "aux_outputs"}
    torch.manual_seed(reference["train_seed"])  # the matcher draws first, image by image
    coords = torch.cat([torch.rand(1, criterion.num_points, 2) for _ in reference["batch"]])
    indices = criterion.matcher(outputs, targets_of(reference["batch"]), coords)
    for (src, tgt), (ref_src, ref_tgt) in zip(indices, reference["matcher_indices"]):
        assert torch.equal(src, ref_src) and torch.equal(tgt, ref_tgt)


def _per_image_predictions(reference, i):
    outputs, x = reference["head_outputs"], reference["batch"][i]
    masks = F.interpolate(outputs["pred_masks"], size=padded_size(reference["batch"]),
                          mode="bilinear", align_corners=False)
    mask_pred = crop_and_resize(masks[i], tuple(x["image"].shape[1:]), x["height"], x["width"])
    return outputs["pred_logits"][i], mask_pred


@pytest.mark.parametrize("image", [0, 1])
def test_semantic_and_panoptic_inference_equal_the_official_ones(reference, cfg, image):
    mask_cls, mask_pred = _per_image_predictions(reference, image)
    expected = reference["inference"][image]
    torch.testing.assert_close(semantic_inference(mask_cls, mask_pred), expected["sem_seg"],
                               rtol=1e-4, atol=1e-6)
    test = cfg.MODEL.MASK_FORMER.TEST
    panoptic, segments = panoptic_inference(
        mask_cls, mask_pred, reference["thing_contiguous_ids"], test.OBJECT_MASK_THRESHOLD,
        test.OVERLAP_THRESHOLD, within_masks=True)
    expected_panoptic, expected_segments = expected["panoptic_seg"]
    assert torch.equal(panoptic, expected_panoptic)
    assert segments == expected_segments


@pytest.mark.parametrize("image", [0, 1])
def test_instance_inference_equals_the_official_one(reference, cfg, image):
    mask_cls, mask_pred = _per_image_predictions(reference, image)
    expected = reference["inference"][image]["instances"]
    result = instance_inference(mask_cls, mask_pred, cfg.TEST.DETECTIONS_PER_IMAGE,
                                thing_ids=reference["thing_contiguous_ids"])
    assert len(result) == len(expected["scores"]) == cfg.TEST.DETECTIONS_PER_IMAGE
    assert result.pred_masks.dtype == torch.bool
    # The official code returns its top pairs unsorted; ours come best class score first.
    for mask, score, label in zip(result.pred_masks, result.scores, result.pred_classes):
        same = [j for j, m in enumerate(expected["pred_masks"])
                if torch.equal(m, mask) and expected["pred_classes"][j] == label
                and abs(expected["scores"][j] - score) <= 1e-4 * abs(score)]
        assert same, f"no official instance of class {int(label)} and score {float(score):.4f}"


def test_instance_scores_are_class_times_mean_mask_probability():
    """Two queries, two classes, a 2x2 image: the scores by hand."""
    mask_cls = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]))  # softmax = these
    mask_pred = torch.tensor([[[2.0, 1.0], [-1.0, -3.0]],  # inside: logits 2 and 1
                              [[-1.0, -1.0], [-1.0, 0.5]]])  # inside: logit 0.5
    result = instance_inference(mask_cls, mask_pred, num_detections=3)
    assert isinstance(result, Instances) and result.image_size == (2, 2)
    sigmoid = torch.sigmoid
    mean_0 = (sigmoid(torch.tensor(2.0)) + sigmoid(torch.tensor(1.0))) / 2
    mean_1 = sigmoid(torch.tensor(0.5))
    # the three best (query, class) pairs: (0, 0) 0.6, (0, 1) 0.3, then (1, 0) and (1, 1) tie at
    # 0.2; topk keeps one of them
    assert result.pred_classes[:2].tolist() == [0, 1]
    torch.testing.assert_close(result.scores[:2], torch.stack([0.6 * mean_0, 0.3 * mean_0]))
    torch.testing.assert_close(result.scores[2], 0.2 * mean_1)
    assert result.pred_masks[0].tolist() == [[True, True], [False, False]]
    assert result.pred_masks[2].tolist() == [[False, False], [False, True]]
    assert result.pred_boxes.tensor[0].tolist() == [0.0, 0.0, 2.0, 1.0]
    # panoptic models: the best pairs first, then only the thing classes among them
    things = instance_inference(mask_cls, mask_pred, num_detections=2, thing_ids=[1])
    assert things.pred_classes.tolist() == [1]
    torch.testing.assert_close(things.scores, 0.3 * mean_0[None])
