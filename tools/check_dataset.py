#!/usr/bin/env python
"""Decodes every image and label file of registered datasets and lists every problem at once.

    python tools/check_dataset.py camvid_sem_seg_train camvid_sem_seg_val
    python tools/check_dataset.py ade20k_panoptic_val --workers 8
    python tools/check_dataset.py --config-file configs/custom/maskformer_R50.yaml DATASETS.CUSTOM_ROOT ROOT
    python tools/check_dataset.py --list

Checks what the training mappers and the evaluators check, on every entry instead of the ones a
run happens to draw: images and label files that are missing, unreadable or truncated, sizes
that differ from the image's (or from the entry's "height"/"width"), label values that are
neither a class of the dataset's metadata nor its ignore label, panoptic segments of unknown
categories; for a dataset folder of DATASETS.CUSTOM_ROOT, also images without label maps and
label maps without images. With --config-file, the datasets are the config's DATASETS.TRAIN and
DATASETS.TEST, and the other arguments are config overrides (KEY VALUE pairs, as for
train_net.py). Prints one line per problem ("file: what is wrong"), then a summary per dataset;
exits with 1 if there is any problem (or a name is not registered), 0 otherwise. Datasets are
read from $DETECTRON2_DATASETS, as in training. train_net.py runs the same check on a first start.
"""
import argparse
import sys
import time
from typing import Dict, List, Optional, Tuple


from detectron2.data import DatasetCatalog, MetadataCatalog

import mask_former.data.datasets  # noqa: F401  (registers the datasets)
from mask_former.config import load_config
from mask_former.data.dataset_check import Problem, require_registered, scan_dataset
from mask_former.data.datasets.register_custom import CUSTOM_DATASETS, pair_files
from mask_former.errors import UserError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="check_dataset.py",
        description="Decode every file of registered datasets and list every problem.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="registered dataset names; with --config-file, config overrides "
                             "(KEY VALUE pairs) instead")
    parser.add_argument("--config-file", metavar="FILE",
                        help="check the config's DATASETS.TRAIN and DATASETS.TEST (and register "
                             "its DATASETS.CUSTOM_ROOT)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="decoding processes (default: one per CPU; 1: no extra process)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="print the registered names and exit")
    return parser


def dataset_files(name: str) -> Tuple[List[Dict], List[Problem]]:
    """The dataset dicts of `name`, and the problems found in listing its files: for a dataset
    folder of DATASETS.CUSTOM_ROOT, its unpaired images and label maps (whose loading would stop
    at the first), whose paired files are then scanned; none for other datasets."""
    if name in CUSTOM_DATASETS.values():
        metadata = MetadataCatalog.get(name)
        return pair_files(metadata.image_root, metadata.sem_seg_root)
    return DatasetCatalog.get(name), []


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.list:
        print("\n".join(sorted(DatasetCatalog.list())))
        return 0
    if args.workers is not None and args.workers < 1:
        get_parser().error(f"--workers {args.workers}: give 1 or more")
    if args.config_file:
        cfg = load_config(args.config_file, args.names)
        names = list(dict.fromkeys(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)))
        if not names:
            get_parser().error(f"{args.config_file} names no dataset in DATASETS.TRAIN or "
                               "DATASETS.TEST")
    else:
        names = args.names
    if not names:
        get_parser().error("name at least one dataset (--list prints the registered names)")
    for name in names:  # all names first: no scan is wasted on a typo in the last one
        require_registered(name)
    summaries, total = [], 0
    for name in names:
        start = time.perf_counter()
        dataset_dicts, problems = dataset_files(name)
        problems += scan_dataset(name, args.workers, progress=not args.no_progress,
                                 dataset_dicts=dataset_dicts)
        for problem in problems:
            print(problem, flush=True)
        files = len({problem.path for problem in problems})
        summaries.append(f"{name}: {len(dataset_dicts)} entries, {len(problems)} problems in "
                         f"{files} files ({time.perf_counter() - start:.1f} s)")
        total += len(problems)
    print("\n".join(summaries))
    return 1 if total else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as error:
        print(f"check_dataset.py: error: {error}", file=sys.stderr)
        sys.exit(1)
