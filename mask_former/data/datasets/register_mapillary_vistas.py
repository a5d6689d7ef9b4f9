"""Registers Mapillary Vistas (v1.2, 65 classes) for semantic segmentation.

Names: `mapillary_vistas_sem_seg_{train,val}`, read from
    $DETECTRON2_DATASETS/mapillary_vistas/{training,validation}/images/*.jpg
    $DETECTRON2_DATASETS/mapillary_vistas/{training,validation}/labels/*.png
The label maps need no conversion: a pixel holds its class's index in the `labels` list of the
dataset's config.json, and the last entry, "Unlabeled" (65), is the ignore label.

Class names and colours come from the dataset itself, $DETECTRON2_DATASETS/mapillary_vistas/
config.json, read at registration: its `labels` entries that are evaluated (`evaluate` true), with
their `readable` names and `color`s. Without that file the classes are named "class_0" ..
"class_64", have no colours, and loading the dataset logs a warning.
"""
import json
import logging
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg

from .paths import dataset_root, require_paths

logger = logging.getLogger(__name__)

MAPILLARY_DIR = "mapillary_vistas"
MAPILLARY_NUM_CLASSES = 65
MAPILLARY_IGNORE_LABEL = 65
MAPILLARY_SPLITS = {"train": "training", "val": "validation"}


def config_path(root: str) -> str:
    return os.path.join(root, MAPILLARY_DIR, "config.json")


def read_mapillary_vistas_labels(path: str) -> Optional[List[Dict]]:
    """The evaluated entries of config.json's `labels`, or None when the file is absent."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        labels = json.load(f)["labels"]
    return [label for label in labels if label.get("evaluate", True)]


def mapillary_vistas_metadata(labels: Optional[List[Dict]]) -> Dict:
    """Metadata for the labels read by read_mapillary_vistas_labels (None: generic names)."""
    metadata = dict(ignore_label=MAPILLARY_IGNORE_LABEL, evaluator_type="sem_seg")
    if labels is None:
        metadata["stuff_classes"] = [f"class_{i}" for i in range(MAPILLARY_NUM_CLASSES)]
        return metadata
    if len(labels) != MAPILLARY_NUM_CLASSES:
        logger.warning(
            f"Mapillary Vistas config.json has {len(labels)} evaluated labels, expected "
            f"{MAPILLARY_NUM_CLASSES} (v1.2); using them as they are"
        )
    metadata["stuff_classes"] = [label["readable"] for label in labels]
    metadata["stuff_colors"] = [list(label["color"]) for label in labels]
    return metadata


def load_mapillary_vistas(
    split: str, root: Optional[str] = None, generic_names: bool = False
) -> List[Dict]:
    """Dataset dicts of one split; `root` defaults to $DETECTRON2_DATASETS, read now."""
    name = f"mapillary_vistas_sem_seg_{split}"
    root = root or dataset_root()
    split_dir = os.path.join(root, MAPILLARY_DIR, MAPILLARY_SPLITS[split])
    image_dir = os.path.join(split_dir, "images")
    label_dir = os.path.join(split_dir, "labels")
    require_paths(name, [image_dir, label_dir])
    if generic_names:
        logger.warning(
            f"{name}: {config_path(root)} was not found when the dataset was registered, so its "
            f"classes are named class_0 .. class_{MAPILLARY_NUM_CLASSES - 1}"
        )
    return load_sem_seg(label_dir, image_dir, gt_ext="png", image_ext="jpg")


def register_mapillary_vistas(root: Optional[str] = None) -> None:
    """Registers `mapillary_vistas_sem_seg_{train,val}`.

    config.json is read now from the current root; the images when a split is loaded.
    """
    labels = read_mapillary_vistas_labels(config_path(root or dataset_root()))
    for split in MAPILLARY_SPLITS:
        name = f"mapillary_vistas_sem_seg_{split}"
        DatasetCatalog.register(
            name,
            lambda split=split: load_mapillary_vistas(split, root, generic_names=labels is None),
        )
        MetadataCatalog.get(name).set(**mapillary_vistas_metadata(labels))


register_mapillary_vistas()
