#!/usr/bin/env python
"""Converts ADE20K-150's label maps to the convention of detectron2's `ade20k_sem_seg_*` datasets.

ADEChallengeData2016/annotations/{training,validation}/*.png hold 0 for "unlabeled" and 1..150 for
the classes; this writes the same files to ADEChallengeData2016/annotations_detectron2/ with the
classes as 0..149 and 255 (the ignore label) for unlabeled.

    python datasets/prepare_ade20k.py                  # root: $DETECTRON2_DATASETS, else ./datasets
    python datasets/prepare_ade20k.py --root /data/datasets --overwrite --workers 8

Files already converted are skipped, so an interrupted run can simply be started again.
"""
import functools
import os
import sys
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from mask_former.data.datasets.preparation import (
    BadInputError,
    MissingInputError,
    counts,
    map_with_progress,
    needs_writing,
    require_inputs,
    run_preparation,
    save_image,
)

ADE20K_DIR = "ADEChallengeData2016"
SPLITS = ("training", "validation")
NUM_CLASSES = 150
IGNORE_LABEL = 255


def convert_label_map(labels: np.ndarray) -> np.ndarray:
    """0 (unlabeled) -> 255; class k in 1..150 -> k - 1."""
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(
            f"expected a 2-D uint8 label map, got {labels.dtype} of shape {labels.shape}"
        )
    if labels.max(initial=0) > NUM_CLASSES:
        raise ValueError(f"label {labels.max()} is out of range 0..{NUM_CLASSES}")
    # uint8 arithmetic wraps 0 - 1 around to 255, the ignore label.
    return labels - np.uint8(1)


def convert_file(name: str, src_dir: str, dst_dir: str, overwrite: bool) -> bool:
    """Converts src_dir/name into dst_dir/name unless done; returns whether it wrote it."""
    dst = os.path.join(dst_dir, name)
    if not needs_writing([dst], overwrite):
        return False
    src = os.path.join(src_dir, name)
    with Image.open(src) as image:
        # Palette ("P") images keep their indices in np.asarray, which is what is wanted.
        labels = np.asarray(image)
    try:
        converted = convert_label_map(labels)
    except ValueError as error:
        raise BadInputError(f"{src}: {error}") from None
    save_image(converted, dst)
    return True


def convert_ade20k_annotations(
    src_dir: str, dst_dir: str, overwrite: bool = False, progress: bool = True, workers: int = 1
) -> Dict[str, int]:
    """Converts every PNG of `src_dir` into `dst_dir`; returns {"converted": n, "skipped": m}.

    Outputs that exist are skipped unless `overwrite`. Raises MissingInputError (a
    FileNotFoundError) when `src_dir` is missing and BadInputError (a ValueError, naming the file)
    for a label map that is not ADE20K-150's.
    """
    if not os.path.isdir(src_dir):
        raise MissingInputError(f"ADE20K annotation folder {src_dir!r} does not exist")
    os.makedirs(dst_dir, exist_ok=True)
    names = sorted(name for name in os.listdir(src_dir) if name.endswith(".png"))
    convert = functools.partial(
        convert_file, src_dir=src_dir, dst_dir=dst_dir, overwrite=overwrite)
    desc = os.path.basename(os.path.normpath(src_dir))
    return counts(map_with_progress(convert, names, workers, desc, progress))


def prepare_ade20k(
    root: str, overwrite: bool = False, progress: bool = True, workers: int = 1
) -> Dict[str, Dict[str, int]]:
    """Converts both splits under `root`/ADEChallengeData2016; returns the counts per split."""
    base = os.path.join(root, ADE20K_DIR)
    sources = {split: os.path.join(base, "annotations", split) for split in SPLITS}
    require_inputs(sources.values(),
                   f"{ADE20K_DIR}/annotations/{{training,validation}}/*.png from "
                   f"ADEChallengeData2016.zip", root)
    return {
        split: convert_ade20k_annotations(
            src, os.path.join(base, "annotations_detectron2", split), overwrite, progress, workers
        )
        for split, src in sources.items()
    }


def main(argv: Optional[List[str]] = None) -> int:
    return run_preparation(
        "prepare_ade20k",
        "Convert ADE20K-150 annotations (ADEChallengeData2016/annotations) into "
        "ADEChallengeData2016/annotations_detectron2: class k -> k-1, unlabeled 0 -> 255.",
        prepare_ade20k, argv,
    )


if __name__ == "__main__":
    sys.exit(main())
