"""Registers COCO-Stuff-10K (171 classes: 80 things, 91 stuff) for semantic segmentation.

Names: `coco_2017_{train,test}_stuff_10k_sem_seg` (9,000 and 1,000 images), read from
    $DETECTRON2_DATASETS/coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg
    $DETECTRON2_DATASETS/coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png
as written by datasets/prepare_coco_stuff_10k.py from the v1.1 release: uint8 maps of the class
index 0..170, 255 where unlabeled.

The class index follows the COCO-Stuff category ids: the 80 COCO things (ids 1..90, with gaps; names
from detectron2's COCO_CATEGORIES), then the 91 stuff classes (ids 92..182, listed below; detectron2
only has the 53 merged stuff classes of COCO panoptic).
"""
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .paths import converted_sem_seg_paths, dataset_root, require_paths

# COCO-Stuff's stuff categories, ids 92..182 in order.
COCO_STUFF_CLASSES = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
FIRST_STUFF_ID = 92
COCO_STUFF_10K_DIR = os.path.join("coco", "coco_stuff_10k")
COCO_STUFF_10K_SPLITS = ("train", "test")
COCO_STUFF_10K_IGNORE_LABEL = 255


def coco_stuff_metadata() -> Dict:
    """stuff_classes and the map from COCO-Stuff category ids to class indices."""
    things = sorted((c for c in COCO_CATEGORIES if c["isthing"]), key=lambda c: c["id"])
    assert len(things) == 80, len(things)
    stuff_ids = range(FIRST_STUFF_ID, FIRST_STUFF_ID + len(COCO_STUFF_CLASSES))
    ids = [c["id"] for c in things] + list(stuff_ids)
    names = [c["name"] for c in things] + list(COCO_STUFF_CLASSES)
    return dict(
        stuff_classes=names,
        stuff_dataset_id_to_contiguous_id={dataset_id: i for i, dataset_id in enumerate(ids)},
    )


def coco_stuff_10k_paths(root: str, split: str) -> Dict[str, str]:
    """The folders of one split's images and label maps."""
    return converted_sem_seg_paths(os.path.join(root, COCO_STUFF_10K_DIR), split)


def load_coco_stuff_10k(split: str, root: Optional[str] = None) -> List[Dict]:
    """Dataset dicts of one split; `root` defaults to $DETECTRON2_DATASETS, read now."""
    paths = coco_stuff_10k_paths(root or dataset_root(), split)
    require_paths(f"coco_2017_{split}_stuff_10k_sem_seg", paths.values())
    return load_sem_seg(paths["sem_seg_root"], paths["image_root"], gt_ext="png", image_ext="jpg")


def register_coco_stuff_10k(root: Optional[str] = None) -> None:
    """Registers `coco_2017_{train,test}_stuff_10k_sem_seg`; `root` is resolved when loading."""
    for split in COCO_STUFF_10K_SPLITS:
        name = f"coco_2017_{split}_stuff_10k_sem_seg"
        DatasetCatalog.register(name, lambda split=split: load_coco_stuff_10k(split, root))
        MetadataCatalog.get(name).set(
            **coco_stuff_metadata(), ignore_label=COCO_STUFF_10K_IGNORE_LABEL,
            evaluator_type="sem_seg",
        )


register_coco_stuff_10k()
