"""Registers the embedded synthetic shapes dataset (see mask_former/data/synthetic_shapes.py).

Names, each with a train and a val split:
    synthetic_shapes_sem_seg_{train,val}    semantic (5 classes)
    synthetic_shapes_panoptic_{train,val}   panoptic, with the semantic label maps too, and the
                                            COCO instance json (metadata "json_file"), so that
                                            evaluation reports mIoU, PQ and mask AP
    synthetic_shapes_instance_{train,val}   instance segmentation: "annotations" of the 3 thing
                                            classes (contiguous ids 0..2), for the instance mappers
Files are generated on first use under $MASK_FORMER_CACHE (default ~/.cache/mask_former), whose
value is read when a dataset is loaded; "json_file" is resolved when registered.
"""
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..synthetic_shapes import (
    CLASSES,
    COLORS,
    IS_THING,
    SPLITS,
    default_root,
    instances_json,
    load_synthetic_shapes,
)

EVALUATOR_TYPES = {"sem_seg": "sem_seg", "panoptic": "synthetic_panoptic_seg", "instance": "coco"}


def register_synthetic_shapes(root: str = None) -> None:
    """Registers the six names; `root` defaults to default_root(), resolved when loading."""
    things = [i for i, thing in enumerate(IS_THING) if thing]
    # Every class, things included, as ADE20K panoptic: the semantic evaluator maps each predicted
    # class back to a dataset id through it.
    all_classes_map = {i: i for i in range(len(CLASSES))}
    for split in SPLITS:
        for kind, evaluator_type in EVALUATOR_TYPES.items():
            name = f"synthetic_shapes_{kind}_{split}"
            DatasetCatalog.register(
                name, lambda split=split, kind=kind: load_synthetic_shapes(
                    root or default_root(), split, kind)
            )
            if kind == "instance":
                # as COCO's instance registrations: the things only, contiguous ids 0..2
                metadata = dict(
                    thing_classes=[CLASSES[c] for c in things],
                    thing_colors=[COLORS[c] for c in things],
                    thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(things)},
                )
            else:
                metadata = dict(stuff_classes=list(CLASSES), stuff_colors=list(COLORS),
                                ignore_label=255)
            if kind == "panoptic":
                metadata.update(
                    thing_classes=list(CLASSES),
                    thing_colors=list(COLORS),
                    thing_dataset_id_to_contiguous_id={c: c for c in things},
                    stuff_dataset_id_to_contiguous_id=all_classes_map,
                    label_divisor=1000,
                    json_file=instances_json(root or default_root(), split),
                )
            MetadataCatalog.get(name).set(evaluator_type=evaluator_type, **metadata)


register_synthetic_shapes()
