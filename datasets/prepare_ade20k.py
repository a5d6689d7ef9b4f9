#!/usr/bin/env python
"""Converts ADE20K-150's label maps to the convention of detectron2's `ade20k_sem_seg_*` datasets.

ADEChallengeData2016/annotations/{training,validation}/*.png hold 0 for "unlabeled" and 1..150 for
the classes; this writes the same files to ADEChallengeData2016/annotations_detectron2/ with the
classes as 0..149 and 255 (the ignore label) for unlabeled.

    python datasets/prepare_ade20k.py                  # root: $DETECTRON2_DATASETS, else ./datasets
    python datasets/prepare_ade20k.py --root /data/datasets --overwrite

Files already converted are skipped, so an interrupted run can simply be started again.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

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


def convert_ade20k_annotations(
    src_dir: str, dst_dir: str, overwrite: bool = False, progress: bool = True
) -> Dict[str, int]:
    """Converts every PNG of `src_dir` into `dst_dir`; returns {"converted": n, "skipped": m}.

    Outputs that exist are skipped unless `overwrite`. Raises FileNotFoundError when `src_dir` is
    missing and ValueError (naming the file) for a label map that is not ADE20K-150's.
    """
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"ADE20K annotation folder {src_dir!r} does not exist")
    os.makedirs(dst_dir, exist_ok=True)
    names = sorted(name for name in os.listdir(src_dir) if name.endswith(".png"))
    counts = {"converted": 0, "skipped": 0}
    for name in tqdm(names, desc=os.path.basename(os.path.normpath(src_dir)), unit="file",
                     disable=not progress):
        dst = os.path.join(dst_dir, name)
        if os.path.exists(dst) and not overwrite:
            counts["skipped"] += 1
            continue
        src = os.path.join(src_dir, name)
        with Image.open(src) as image:
            # Palette ("P") images keep their indices in np.asarray, which is what is wanted.
            labels = np.asarray(image)
        try:
            converted = convert_label_map(labels)
        except ValueError as error:
            raise ValueError(f"{src}: {error}") from None
        # Write then rename, so an interrupted run never leaves a truncated file that a re-run
        # would skip as done.
        tmp = os.path.join(dst_dir, f".{name}.tmp")
        Image.fromarray(converted).save(tmp, format="PNG")
        os.replace(tmp, dst)
        counts["converted"] += 1
    return counts


def prepare_ade20k(
    root: str, overwrite: bool = False, progress: bool = True
) -> Dict[str, Dict[str, int]]:
    """Converts both splits under `root`/ADEChallengeData2016; returns the counts per split."""
    base = os.path.join(root, ADE20K_DIR)
    sources = {split: os.path.join(base, "annotations", split) for split in SPLITS}
    missing = [path for path in sources.values() if not os.path.isdir(path)]
    if missing:
        # Checked before converting anything, so a wrong root changes nothing on disk.
        raise FileNotFoundError(
            "missing " + ", ".join(repr(path) for path in missing)
            + f"; --root (or $DETECTRON2_DATASETS) must be the folder holding {ADE20K_DIR}/"
        )
    return {
        split: convert_ade20k_annotations(
            src, os.path.join(base, "annotations_detectron2", split), overwrite, progress
        )
        for split, src in sources.items()
    }


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert ADE20K-150 annotations (ADEChallengeData2016/annotations) into "
        "ADEChallengeData2016/annotations_detectron2: class k -> k-1, unlabeled 0 -> 255."
    )
    parser.add_argument(
        "--root", default=os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")),
        help="folder holding ADEChallengeData2016/ "
        "(default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="convert again files that already exist in annotations_detectron2/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        counts = prepare_ade20k(args.root, args.overwrite, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"prepare_ade20k: error: {error}", file=sys.stderr)
        return 1
    for split, split_counts in counts.items():
        print(f"{split}: {split_counts['converted']} converted, {split_counts['skipped']} skipped "
              f"(already there; --overwrite to redo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
