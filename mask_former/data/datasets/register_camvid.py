"""Registers CamVid, the 11-class version of the SegNet tutorial, for semantic segmentation.

Names: `camvid_sem_seg_train` (367 images) and `camvid_sem_seg_val` (101 images), read from
    $DETECTRON2_DATASETS/camvid/images/{train,val}/NAME.jpg
    $DETECTRON2_DATASETS/camvid/labels/{train,val}/NAME.png   uint8, 0..10 classes, 11 void
The label maps are used as they are: value 11 ("void") is the ignore label.
"""
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

from .paths import dataset_root, require_paths

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)
# The SegNet tutorial's palette for these classes.
CAMVID_COLORS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
CAMVID_IGNORE_LABEL = 11
CAMVID_SPLITS = ("train", "val")


def load_camvid(split: str, root: Optional[str] = None) -> List[Dict]:
    """Dataset dicts of one split; `root` defaults to $DETECTRON2_DATASETS, read now."""
    camvid = os.path.join(root or dataset_root(), "camvid")
    image_dir = os.path.join(camvid, "images", split)
    label_dir = os.path.join(camvid, "labels", split)
    require_paths(f"camvid_sem_seg_{split}", [image_dir, label_dir])
    return load_sem_seg(label_dir, image_dir, gt_ext="png", image_ext="jpg")


def register_camvid(root: Optional[str] = None) -> None:
    """Registers `camvid_sem_seg_{train,val}`; `root` is resolved when a split is loaded."""
    for split in CAMVID_SPLITS:
        name = f"camvid_sem_seg_{split}"
        DatasetCatalog.register(name, lambda split=split: load_camvid(split, root))
        MetadataCatalog.get(name).set(
            stuff_classes=list(CAMVID_CLASSES),
            stuff_colors=[list(color) for color in CAMVID_COLORS],
            ignore_label=CAMVID_IGNORE_LABEL,
            evaluator_type="sem_seg",
        )


register_camvid()
