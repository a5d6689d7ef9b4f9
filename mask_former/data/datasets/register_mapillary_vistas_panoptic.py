"""Registers Mapillary Vistas (v1.2, 65 classes) for panoptic segmentation, as Mask2Former does.

Names: `mapillary_vistas_panoptic_{train,val}`, read from
    $DETECTRON2_DATASETS/mapillary_vistas/{training,validation}/images/*.jpg
    $DETECTRON2_DATASETS/mapillary_vistas/{training,validation}/panoptic/*.png     (segment ids)
    $DETECTRON2_DATASETS/mapillary_vistas/{training,validation}/panoptic/panoptic_2018.json
    $DETECTRON2_DATASETS/mapillary_vistas/{training,validation}/labels/*.png       (class ids)
all as the v1.2 download has them. Every dataset dict has `pan_seg_file_name` and
`sem_seg_file_name`: evaluation reports PQ and mIoU (evaluator_type
"mapillary_vistas_panoptic_seg"); ignore label 65 ("Unlabeled").

Classes, colours and which classes are things (a label's `instances` flag) come from
mapillary_vistas/config.json, read at registration (see register_mapillary_vistas.py). Category ids
of the panoptic json are a label's index + 1; the contiguous id is the index (the value in
labels/*.png).
"""
import json
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .paths import dataset_root, require_paths
from .register_ade20k_panoptic import panoptic_categories_metadata
from .register_mapillary_vistas import (
    MAPILLARY_DIR,
    MAPILLARY_IGNORE_LABEL,
    MAPILLARY_SPLITS,
    config_path,
    read_mapillary_vistas_labels,
)

LABEL_DIVISOR = 1000


def mapillary_vistas_panoptic_paths(root: str, split: str) -> Dict[str, str]:
    base = os.path.join(root, MAPILLARY_DIR, MAPILLARY_SPLITS[split])
    return dict(
        image_root=os.path.join(base, "images"),
        panoptic_root=os.path.join(base, "panoptic"),
        panoptic_json=os.path.join(base, "panoptic", "panoptic_2018.json"),
        sem_seg_root=os.path.join(base, "labels"),
    )


def mapillary_vistas_panoptic_metadata(labels: List[Dict]) -> Dict:
    """Class names, colours and id maps of config.json's evaluated `labels` (things: the labels
    with `instances`; dataset id = index + 1, as panoptic_2018.json's categories)."""
    categories = [{"id": i + 1, "name": label["readable"], "color": label["color"],
                   "isthing": label["instances"]} for i, label in enumerate(labels)]
    metadata = panoptic_categories_metadata(categories)
    metadata["stuff_classes"] = metadata["thing_classes"]
    return metadata


def load_mapillary_vistas_panoptic(name: str, split: str, root: Optional[str] = None) -> List[Dict]:
    """Loads a split (category ids made contiguous), and sets its root's paths."""
    root = root or dataset_root()
    paths = mapillary_vistas_panoptic_paths(root, split)
    require_paths(name, [config_path(root)] + list(paths.values()))
    metadata = MetadataCatalog.get(name)
    if "thing_dataset_id_to_contiguous_id" not in metadata.as_dict():
        metadata.set(**mapillary_vistas_panoptic_metadata(
            read_mapillary_vistas_labels(config_path(root))))
    # The panoptic evaluator reads these; set now because the root is only known now.
    metadata.set(**paths)
    things = metadata.thing_dataset_id_to_contiguous_id
    stuff = metadata.stuff_dataset_id_to_contiguous_id
    with open(paths["panoptic_json"], encoding="utf-8") as f:
        annotations = json.load(f)["annotations"]
    dataset_dicts = []
    for annotation in annotations:
        stem = os.path.splitext(annotation["file_name"])[0]
        segments = []
        for segment in annotation["segments_info"]:
            if segment["category_id"] not in stuff:
                raise ValueError(
                    f"{paths['panoptic_json']}: a segment of {annotation['file_name']!r} has "
                    f"category_id {segment['category_id']}, not one of the {len(stuff)} classes "
                    f"of {config_path(root)}")
            segments.append(dict(segment, category_id=stuff[segment["category_id"]],
                                 isthing=segment["category_id"] in things))
        dataset_dicts.append({
            "file_name": os.path.join(paths["image_root"], stem + ".jpg"),
            "image_id": annotation["image_id"],
            "pan_seg_file_name": os.path.join(paths["panoptic_root"], annotation["file_name"]),
            "sem_seg_file_name": os.path.join(paths["sem_seg_root"], annotation["file_name"]),
            "segments_info": segments,
        })
    if not dataset_dicts:
        raise ValueError(f"{paths['panoptic_json']} has no annotations")
    return dataset_dicts


def register_mapillary_vistas_panoptic_split(name: str, split: str,
                                             root: Optional[str] = None) -> None:
    """Registers one split under `name`; config.json is read now, when present, from the current
    root, the rest when the split is loaded."""
    DatasetCatalog.register(name, lambda: load_mapillary_vistas_panoptic(name, split, root))
    MetadataCatalog.get(name).set(
        ignore_label=MAPILLARY_IGNORE_LABEL,
        label_divisor=LABEL_DIVISOR,
        evaluator_type="mapillary_vistas_panoptic_seg",
    )
    labels = read_mapillary_vistas_labels(config_path(root or dataset_root()))
    if labels is not None:
        MetadataCatalog.get(name).set(**mapillary_vistas_panoptic_metadata(labels))


def register_mapillary_vistas_panoptic(root: Optional[str] = None) -> None:
    """Registers `mapillary_vistas_panoptic_{train,val}`."""
    for split in MAPILLARY_SPLITS:
        register_mapillary_vistas_panoptic_split(f"mapillary_vistas_panoptic_{split}", split, root)


register_mapillary_vistas_panoptic()
