"""Registers ADE20K-Full (847 classes) for semantic segmentation.

Names: `ade20k_full_sem_seg_{train,val}`, read from
    $DETECTRON2_DATASETS/ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
    $DETECTRON2_DATASETS/ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif
as written by the official MaskFormer's datasets/prepare_ade20k_full_sem_seg.py: uint16 label maps
holding the class index 0..846, 65535 where unlabeled.

Class names. The 847 classes are a selection of the ~3,700 object names of ADE20K (objects.txt), in
an order of the official script's own making, and no file of the dataset lists that selection; so
objects.txt cannot name them. The names are read, at registration, from
    $DETECTRON2_DATASETS/ADE20K_2021_17_01/ade20k_full_class_names.txt
one name per line in class-index order (datasets/README.md shows how to write it from the official
script's list). Without that file the classes are named "class_0" .. "class_846" (metrics are
unaffected; only their labels are) and loading the dataset logs a warning.
"""
import logging
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

from .paths import dataset_root, require_paths

logger = logging.getLogger(__name__)

ADE20K_FULL_DIR = "ADE20K_2021_17_01"
ADE20K_FULL_NUM_CLASSES = 847
ADE20K_FULL_IGNORE_LABEL = 65535
CLASS_NAMES_FILE = "ade20k_full_class_names.txt"
ADE20K_FULL_SPLITS = {"train": "training", "val": "validation"}


def read_ade20k_full_class_names(path: str) -> Optional[List[str]]:
    """The 847 names in `path` (one a line), or None when the file is absent or malformed."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != ADE20K_FULL_NUM_CLASSES:
        # Not an error: a broken names file must not stop `import mask_former.data.datasets`.
        logger.warning(
            f"{path} lists {len(names)} class names, expected {ADE20K_FULL_NUM_CLASSES}; "
            f"ignoring it"
        )
        return None
    return names


def generic_class_names(num_classes: int) -> List[str]:
    return [f"class_{i}" for i in range(num_classes)]


def load_ade20k_full(
    split: str, root: Optional[str] = None, generic_names: bool = False
) -> List[Dict]:
    """Dataset dicts of one split; `root` defaults to $DETECTRON2_DATASETS, read now."""
    name = f"ade20k_full_sem_seg_{split}"
    base = os.path.join(root or dataset_root(), ADE20K_FULL_DIR)
    image_dir = os.path.join(base, "images_detectron2", ADE20K_FULL_SPLITS[split])
    label_dir = os.path.join(base, "annotations_detectron2", ADE20K_FULL_SPLITS[split])
    require_paths(name, [image_dir, label_dir])
    if generic_names:
        logger.warning(
            f"{name}: no valid {os.path.join(base, CLASS_NAMES_FILE)} was found when the dataset "
            f"was registered, so its classes are named class_0 .. class_846 "
            f"(see datasets/README.md)"
        )
    return load_sem_seg(label_dir, image_dir, gt_ext="tif", image_ext="jpg")


def register_ade20k_full(root: Optional[str] = None) -> None:
    """Registers `ade20k_full_sem_seg_{train,val}`.

    The class names are read now from the current root; the images when a split is loaded.
    """
    names_file = os.path.join(root or dataset_root(), ADE20K_FULL_DIR, CLASS_NAMES_FILE)
    names = read_ade20k_full_class_names(names_file)
    classes = names or generic_class_names(ADE20K_FULL_NUM_CLASSES)
    for split in ADE20K_FULL_SPLITS:
        name = f"ade20k_full_sem_seg_{split}"
        DatasetCatalog.register(
            name, lambda split=split: load_ade20k_full(split, root, generic_names=names is None)
        )
        MetadataCatalog.get(name).set(
            stuff_classes=list(classes),
            ignore_label=ADE20K_FULL_IGNORE_LABEL,
            evaluator_type="sem_seg",
        )


register_ade20k_full()
