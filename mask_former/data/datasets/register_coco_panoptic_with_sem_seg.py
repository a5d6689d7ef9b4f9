"""Registers COCO panoptic with semantic label maps, as Mask2Former does for its COCO panoptic
recipe's evaluation (PQ, mIoU and mask AP on one dataset).

Names: `coco_2017_{train,val}_panoptic_with_sem_seg`: detectron2's `coco_2017_{train,val}_panoptic`
(same images, panoptic PNGs and json, instance json as "json_file"; paths resolved by detectron2
when it registered them) plus
    $DETECTRON2_DATASETS/coco/panoptic_semseg_{train,val}2017/*.png   class ids 0..132, 255 void
written by the official Mask2Former's datasets/prepare_coco_semantic_annos_from_panoptic_annos.py.
Every class is in `stuff_dataset_id_to_contiguous_id` (the semantic evaluator maps all predicted
classes back to dataset ids through it); contiguous ids are the positions in detectron2's
COCO_CATEGORIES, things (0..79) first.
"""
import os
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

from .paths import require_paths

COCO_PANOPTIC_SPLITS = ("train", "val")


def coco_panoptic_with_sem_seg_metadata(panoptic) -> Dict:
    """The class metadata of detectron2's COCO panoptic registration `panoptic`, with every class
    in the stuff map."""
    keys = ("thing_classes", "thing_colors", "stuff_classes", "stuff_colors",
            "thing_dataset_id_to_contiguous_id")
    metadata = {key: panoptic.get(key) for key in keys}
    metadata["stuff_dataset_id_to_contiguous_id"] = {
        category["id"]: i for i, category in enumerate(COCO_CATEGORIES)}
    return metadata


def load_coco_panoptic_with_sem_seg(name: str, split: str) -> List[Dict]:
    metadata = MetadataCatalog.get(name)
    paths = [metadata.image_root, metadata.panoptic_root, metadata.panoptic_json,
             metadata.sem_seg_root]
    require_paths(name, paths)
    dataset_dicts = load_coco_panoptic_json(metadata.panoptic_json, metadata.image_root,
                                            metadata.panoptic_root, metadata.as_dict())
    for record in dataset_dicts:
        record["sem_seg_file_name"] = os.path.join(
            metadata.sem_seg_root, os.path.basename(record["pan_seg_file_name"]))
    return dataset_dicts


def register_coco_panoptic_with_sem_seg() -> None:
    """Registers `coco_2017_{train,val}_panoptic_with_sem_seg` beside detectron2's COCO panoptic."""
    for split in COCO_PANOPTIC_SPLITS:
        panoptic = MetadataCatalog.get(f"coco_2017_{split}_panoptic")
        name = f"coco_2017_{split}_panoptic_with_sem_seg"
        DatasetCatalog.register(name, lambda name=name, split=split:
                                load_coco_panoptic_with_sem_seg(name, split))
        MetadataCatalog.get(name).set(
            image_root=panoptic.image_root,
            panoptic_root=panoptic.panoptic_root,
            panoptic_json=panoptic.panoptic_json,
            json_file=panoptic.json_file,
            sem_seg_root=os.path.join(os.path.dirname(panoptic.panoptic_root),
                                      f"panoptic_semseg_{split}2017"),
            evaluator_type="coco_panoptic_seg_with_sem_seg",
            ignore_label=255,
            label_divisor=1000,
            **coco_panoptic_with_sem_seg_metadata(panoptic),
        )


register_coco_panoptic_with_sem_seg()
