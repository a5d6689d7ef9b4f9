"""Registers ADE20K-Full (847 classes) for semantic segmentation.

Names: `ade20k_full_sem_seg_{train,val}`, read from
    $DETECTRON2_DATASETS/ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
    $DETECTRON2_DATASETS/ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif
as written by datasets/prepare_ade20k_full.py: uint16 label maps holding the class index 0..846,
65535 where unlabeled. The classes, their names and the ADE20K object ids they stand for are
`ADE20K_FULL_CATEGORIES` (ade20k_full_categories.py).
"""
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

from .ade20k_full_categories import ADE20K_FULL_CATEGORIES
from .paths import converted_sem_seg_paths, dataset_root, require_paths

ADE20K_FULL_DIR = "ADE20K_2021_17_01"
ADE20K_FULL_IGNORE_LABEL = 65535
ADE20K_FULL_SPLITS = {"train": "training", "val": "validation"}


def ade20k_full_paths(root: str, split: str) -> Dict[str, str]:
    """The folders of one split's images and label maps."""
    return converted_sem_seg_paths(os.path.join(root, ADE20K_FULL_DIR), ADE20K_FULL_SPLITS[split])


def load_ade20k_full(split: str, root: Optional[str] = None) -> List[Dict]:
    """Dataset dicts of one split; `root` defaults to $DETECTRON2_DATASETS, read now."""
    paths = ade20k_full_paths(root or dataset_root(), split)
    require_paths(f"ade20k_full_sem_seg_{split}", paths.values())
    return load_sem_seg(paths["sem_seg_root"], paths["image_root"], gt_ext="tif", image_ext="jpg")


def register_ade20k_full(root: Optional[str] = None) -> None:
    """Registers `ade20k_full_sem_seg_{train,val}`; `root` is resolved when a split is loaded."""
    for split in ADE20K_FULL_SPLITS:
        name = f"ade20k_full_sem_seg_{split}"
        DatasetCatalog.register(name, lambda split=split: load_ade20k_full(split, root))
        MetadataCatalog.get(name).set(
            stuff_classes=[category_name for _, category_name in ADE20K_FULL_CATEGORIES],
            # The semantic evaluator writes its json predictions with these ids.
            stuff_dataset_id_to_contiguous_id={
                object_id: i for i, (object_id, _) in enumerate(ADE20K_FULL_CATEGORIES)
            },
            ignore_label=ADE20K_FULL_IGNORE_LABEL,
            evaluator_type="sem_seg",
        )


register_ade20k_full()
