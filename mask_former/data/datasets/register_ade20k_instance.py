"""Registers ADE20K-150 instance segmentation (the 100 thing classes), as Mask2Former does.

Names: `ade20k_instance_{train,val}`, read from
    $DETECTRON2_DATASETS/ADEChallengeData2016/images/{training,validation}/*.jpg
    $DETECTRON2_DATASETS/ADEChallengeData2016/ade20k_instance_{train,val}.json   (COCO instances)
The json is written by datasets/prepare_ade20k_panoptic.py (or the official Mask2Former's
datasets/prepare_ade20k_ins_seg.py): COCO instances with RLE masks, category id = the ADE20K-150
class index of the thing (bed: 7), image file names relative to images/{training,validation}.
evaluator_type "coco": mask AP. The same json is the instance ground truth of
`ade20k_panoptic_{train,val}`.

The classes (`thing_classes`, contiguous ids 0..99 in category-id order) are the 100 instance
categories of ade20k_categories.py.
"""
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .ade20k_categories import ade20k_instance_categories
from .paths import dataset_root, require_paths
from .register_ade20k_panoptic import ADE20K_DIR, ADE20K_PANOPTIC_SPLITS, ade20k_instance_json

ADE20K_INSTANCE_SPLITS = ADE20K_PANOPTIC_SPLITS  # {"train": "training", "val": "validation"}


def ade20k_instance_paths(root: str, split: str) -> Dict[str, str]:
    return dict(
        image_root=os.path.join(root, ADE20K_DIR, "images", ADE20K_INSTANCE_SPLITS[split]),
        json_file=ade20k_instance_json(root, split),
    )


def ade20k_instance_metadata() -> Dict:
    """thing_classes and thing_dataset_id_to_contiguous_id (contiguous ids in category-id order,
    as detectron2's COCO loader makes them)."""
    categories = sorted(ade20k_instance_categories(), key=lambda category: category["id"])
    return dict(
        thing_classes=[category["name"] for category in categories],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(categories)},
    )


def load_ade20k_instance(name: str, split: str, root: Optional[str] = None) -> List[Dict]:
    """Loads a split (annotations with contiguous category ids), and sets its root's paths."""
    paths = ade20k_instance_paths(root or dataset_root(), split)
    require_paths(name, paths.values())
    # COCOEvaluator reads the json from the metadata; it is set here because the root is only
    # known now.
    MetadataCatalog.get(name).set(**paths)
    to_contiguous = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    dataset_dicts = load_coco_json(paths["json_file"], paths["image_root"])
    if not dataset_dicts:
        raise ValueError(f"{paths['json_file']} has no images")
    for record in dataset_dicts:
        for annotation in record["annotations"]:
            if annotation["category_id"] not in to_contiguous:
                raise ValueError(
                    f"{paths['json_file']}: an annotation of image {record['file_name']!r} has "
                    f"category_id {annotation['category_id']}, not one of the 100 ADE20K "
                    "instance categories (ids = ADE20K-150 class indices)")
            annotation["category_id"] = to_contiguous[annotation["category_id"]]
    return dataset_dicts


def register_ade20k_instance_split(name: str, split: str, root: Optional[str] = None) -> None:
    """Registers one split of ADE20K instance under `name`."""
    DatasetCatalog.register(name, lambda: load_ade20k_instance(name, split, root))
    MetadataCatalog.get(name).set(evaluator_type="coco", **ade20k_instance_metadata())


def register_ade20k_instance(root: Optional[str] = None) -> None:
    """Registers `ade20k_instance_{train,val}`."""
    for split in ADE20K_INSTANCE_SPLITS:
        register_ade20k_instance_split(f"ade20k_instance_{split}", split, root)


register_ade20k_instance()
