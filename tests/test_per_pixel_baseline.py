"""The per-pixel baselines train and infer through detectron2's SemanticSegmentor."""
import pytest
import torch
from detectron2.modeling import build_model

from tiny_models import tiny_batch, tiny_config


@pytest.mark.parametrize("head", ["PerPixelBaselineHead", "PerPixelBaselinePlusHead"])
def test_per_pixel_baseline_trains_and_infers(head):
    torch.manual_seed(0)
    num_classes = 5
    cfg = tiny_config(num_classes)
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.SEM_SEG_HEAD.NAME = head
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = num_classes  # one query per class (Plus head)
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
    model = build_model(cfg)
    batch = tiny_batch(num_classes, sizes=((64, 64), (64, 64)))
    for item in batch:
        masks, classes = item["instances"].gt_masks, item["instances"].gt_classes
        item["sem_seg"] = (masks.long() * classes[:, None, None]).sum(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses_seen = []
    for _ in range(5):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses_seen.append(total.item())
    expected_keys = {"loss_sem_seg"} | ({"loss_sem_seg_0"} if head.endswith("PlusHead") else set())
    assert set(losses) == expected_keys
    assert losses_seen[-1] < losses_seen[0]
    model.eval()
    with torch.no_grad():
        results = model(batch)
    assert results[0]["sem_seg"].shape == (num_classes, 64, 64)
