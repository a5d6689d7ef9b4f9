"""This package in place of the official one: the names a training script written for the
official MaskFormer imports, built as it builds them."""
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config

from mask_former import (
    DETRPanopticDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    SemanticSegmentorWithTTA,
    add_mask_former_config,
)
from tiny_models import QUICKSTART_CONFIG


def official_setup(*opts):
    """The official train_net.py's setup(): DeepLab's keys, then MaskFormer's, file, overrides."""
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_mask_former_config(cfg)
    cfg.merge_from_file(str(QUICKSTART_CONFIG))
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def test_mappers_build_as_the_official_train_net_builds_them():
    semantic_cfg = official_setup("DATASETS.TRAIN", "('synthetic_shapes_sem_seg_train',)")
    semantic = MaskFormerSemanticDatasetMapper(semantic_cfg, True)(
        DatasetCatalog.get("synthetic_shapes_sem_seg_train")[0])
    assert semantic["image"].shape == (3, 128, 128)
    assert semantic["instances"].gt_masks.shape[1:] == (128, 128)

    panoptic_cfg = official_setup()
    record = DatasetCatalog.get("synthetic_shapes_panoptic_train")[0]
    for mapper_class in (MaskFormerPanopticDatasetMapper, DETRPanopticDatasetMapper):
        mapped = mapper_class(panoptic_cfg, True)(dict(record))
        instances = mapped["instances"]
        assert len(instances) == len(record["segments_info"]), mapper_class.__name__
        assert instances.gt_masks.shape[1:] == mapped["image"].shape[1:], mapper_class.__name__


@torch.no_grad()
def test_semantic_segmentor_with_tta_wraps_a_model_as_the_official_one():
    # One test size, the image's own: the augmentations are the image and its mirror image.
    cfg = official_setup("TEST.AUG.MIN_SIZES", "(80,)", "TEST.AUG.MAX_SIZE", "200",
                         "TEST.AUG.FLIP", "True")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tta = SemanticSegmentorWithTTA(cfg, model)
    image = torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8)
    (output,) = tta([{"image": image, "height": 80, "width": 100}])
    plain = model([{"image": image, "height": 80, "width": 100}])[0]["sem_seg"]
    mirrored = model([{"image": image.flip(-1), "height": 80, "width": 100}])[0]["sem_seg"]
    assert output["sem_seg"].shape == (5, 80, 100)
    torch.testing.assert_close(output["sem_seg"], (plain + mirrored.flip(-1)) / 2)
