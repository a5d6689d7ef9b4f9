"""Registers ADE20K-150 panoptic segmentation (the scene-parsing benchmark's 150 classes).

Names: `ade20k_panoptic_{train,val}`, read from
    $DETECTRON2_DATASETS/ADEChallengeData2016/images/{training,validation}/*.jpg
    $DETECTRON2_DATASETS/ADEChallengeData2016/ade20k_panoptic_{train,val}.json   (COCO panoptic)
    $DETECTRON2_DATASETS/ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png  (segment ids)
    $DETECTRON2_DATASETS/ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
The json and PNGs are written by datasets/prepare_ade20k_panoptic.py (or the official
MaskFormer's datasets/prepare_ade20k_pan_seg.py), the semantic label maps by
datasets/prepare_ade20k.py. Every dataset dict carries both
`pan_seg_file_name` and `sem_seg_file_name`, so one dataset gives panoptic quality and mIoU
(evaluator_type "ade20k_panoptic_seg"); with ADEChallengeData2016/ade20k_instance_{train,val}.json
(the metadata's "json_file", see register_ade20k_instance.py) it gives mask AP too.

Class names are detectron2's ADE20K-150 names (those of `ade20k_sem_seg_{train,val}`). Which classes
are things, and their colours, come from the json's `categories`: read at registration when the json
is there (the model's panoptic inference needs the thing ids even when no data is loaded, as in
--eval-only), else when the dataset is loaded.
"""
import json
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

from .paths import dataset_root, require_paths

ADE20K_DIR = "ADEChallengeData2016"
ADE20K_PANOPTIC_SPLITS = {"train": "training", "val": "validation"}
LABEL_DIVISOR = 1000


def ade20k_panoptic_paths(root: str, split: str) -> Dict[str, str]:
    base = os.path.join(root, ADE20K_DIR)
    return dict(
        image_root=os.path.join(base, "images", ADE20K_PANOPTIC_SPLITS[split]),
        panoptic_root=os.path.join(base, f"ade20k_panoptic_{split}"),
        panoptic_json=os.path.join(base, f"ade20k_panoptic_{split}.json"),
        sem_seg_root=os.path.join(base, "annotations_detectron2", ADE20K_PANOPTIC_SPLITS[split]),
    )


def ade20k_instance_json(root: str, split: str) -> str:
    """ADEChallengeData2016/ade20k_instance_{split}.json under `root`: the COCO instance ground
    truth of the split's things (Mask2Former's layout)."""
    return os.path.join(root, ADE20K_DIR, f"ade20k_instance_{split}.json")


def ade20k_panoptic_metadata(categories: List[Dict]) -> Dict:
    """Thing/stuff id maps and colours from a panoptic json's `categories`.

    The contiguous id of a category is its position in the list; the official conversion writes
    ids 0..149 in order, so the two coincide.
    """
    if len(categories) != len(ADE20K_SEM_SEG_CATEGORIES):
        raise ValueError(
            f"The ADE20K panoptic json has {len(categories)} categories, expected "
            f"{len(ADE20K_SEM_SEG_CATEGORIES)}"
        )
    return panoptic_categories_metadata(categories)


def panoptic_categories_metadata(categories: List[Dict]) -> Dict:
    """thing_classes, colours and the thing/stuff id maps of COCO-panoptic `categories` (each
    with "id", "name", "color", "isthing"); the contiguous id of a category is its position."""
    names = [category["name"] for category in categories]
    colors = [list(category["color"]) for category in categories]
    return dict(
        # detectron2's visualizer indexes thing_* by contiguous id too, so they list every class.
        thing_classes=names,
        thing_colors=colors,
        stuff_colors=colors,
        thing_dataset_id_to_contiguous_id={
            category["id"]: i for i, category in enumerate(categories) if category["isthing"]
        },
        # Every class, things included: the semantic evaluator maps all its predicted classes back
        # to dataset ids through this.
        stuff_dataset_id_to_contiguous_id={
            category["id"]: i for i, category in enumerate(categories)
        },
    )


def _read_json(path: str) -> Dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ade20k_panoptic_dicts(
    annotations: List[Dict], paths: Dict[str, str], metadata: Dict
) -> List[Dict]:
    """Dataset dicts of a panoptic json's `annotations`, category ids made contiguous."""
    things = metadata["thing_dataset_id_to_contiguous_id"]
    stuff = metadata["stuff_dataset_id_to_contiguous_id"]
    dataset_dicts = []
    for annotation in annotations:
        stem = os.path.splitext(annotation["file_name"])[0]
        segments = [
            dict(segment, category_id=stuff[segment["category_id"]],
                 isthing=segment["category_id"] in things)
            for segment in annotation["segments_info"]
        ]
        dataset_dicts.append(
            {
                "file_name": os.path.join(paths["image_root"], stem + ".jpg"),
                "image_id": annotation["image_id"],
                "pan_seg_file_name": os.path.join(paths["panoptic_root"], annotation["file_name"]),
                "sem_seg_file_name": os.path.join(paths["sem_seg_root"], stem + ".png"),
                "segments_info": segments,
            }
        )
    return dataset_dicts


def load_ade20k_panoptic(name: str, split: str, root: Optional[str] = None) -> List[Dict]:
    """Loads a split, and sets the metadata that depends on its json and on the root."""
    root = root or dataset_root()
    paths = ade20k_panoptic_paths(root, split)
    require_paths(name, paths.values())
    panoptic = _read_json(paths["panoptic_json"])
    metadata = ade20k_panoptic_metadata(panoptic["categories"])
    # The evaluators read the json and PNG paths from the metadata; they are set here because the
    # root is only known now. The instance json is only needed for mask AP.
    MetadataCatalog.get(name).set(**metadata, **paths, json_file=ade20k_instance_json(root, split))
    dataset_dicts = ade20k_panoptic_dicts(panoptic["annotations"], paths, metadata)
    if not dataset_dicts:
        raise ValueError(f"{paths['panoptic_json']} has no annotations")
    return dataset_dicts


def register_ade20k_panoptic_split(name: str, split: str, root: Optional[str] = None) -> None:
    """Registers one split of ADE20K panoptic under `name`."""
    DatasetCatalog.register(name, lambda: load_ade20k_panoptic(name, split, root))
    MetadataCatalog.get(name).set(
        stuff_classes=list(ADE20K_SEM_SEG_CATEGORIES),
        ignore_label=255,
        label_divisor=LABEL_DIVISOR,
        evaluator_type="ade20k_panoptic_seg",
    )
    json_file = ade20k_panoptic_paths(root or dataset_root(), split)["panoptic_json"]
    if os.path.isfile(json_file):
        categories = _read_json(json_file)["categories"]
        MetadataCatalog.get(name).set(**ade20k_panoptic_metadata(categories))


def register_ade20k_panoptic(root: Optional[str] = None) -> None:
    """Registers `ade20k_panoptic_{train,val}`."""
    for split in ADE20K_PANOPTIC_SPLITS:
        register_ade20k_panoptic_split(f"ade20k_panoptic_{split}", split, root)


register_ade20k_panoptic()
