"""Registers the embedded synthetic shapes dataset (see mask_former/data/synthetic_shapes.py).

Names: `synthetic_shapes_sem_seg_{train,val}` (semantic) and `synthetic_shapes_panoptic_{train,val}`
(panoptic, with semantic label maps too). Files are generated on first use under
$MASK_FORMER_CACHE (default ~/.cache/mask_former).
"""
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..synthetic_shapes import CLASSES, COLORS, IS_THING, SPLITS, default_root, load_synthetic_shapes


def register_synthetic_shapes(root: str = None) -> None:
    """Registers the four names; `root` defaults to default_root(), resolved when loading."""
    thing_map = {i: i for i, thing in enumerate(IS_THING) if thing}
    # Every class, things included, as ADE20K panoptic: the semantic evaluator maps each predicted
    # class back to a dataset id through it.
    all_classes_map = {i: i for i in range(len(CLASSES))}
    for split in SPLITS:
        for panoptic in (False, True):
            name = f"synthetic_shapes_{'panoptic' if panoptic else 'sem_seg'}_{split}"
            DatasetCatalog.register(
                name, lambda split=split, panoptic=panoptic: load_synthetic_shapes(
                    root or default_root(), split, panoptic)
            )
            metadata = dict(
                stuff_classes=list(CLASSES),
                stuff_colors=list(COLORS),
                ignore_label=255,
                evaluator_type="synthetic_panoptic_seg" if panoptic else "sem_seg",
            )
            if panoptic:
                metadata.update(
                    thing_classes=list(CLASSES),
                    thing_colors=list(COLORS),
                    thing_dataset_id_to_contiguous_id=thing_map,
                    stuff_dataset_id_to_contiguous_id=all_classes_map,
                    label_divisor=1000,
                )
            MetadataCatalog.get(name).set(**metadata)


register_synthetic_shapes()
