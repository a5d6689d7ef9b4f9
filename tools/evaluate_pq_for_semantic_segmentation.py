#!/usr/bin/env python
"""PQ, SQ and RQ of a semantic segmentation model with every class as "stuff", next to its mIoU:
the PQ that the official MaskFormer reports for its semantic models (see docs/evaluation.md).

    python tools/evaluate_pq_for_semantic_segmentation.py \\
        --config-file configs/ade20k/maskformer_R50.yaml MODEL.WEIGHTS model_final.pth
    python tools/evaluate_pq_for_semantic_segmentation.py --config-file CONFIG \\
        --dataset ade20k_sem_seg_val --per-class MODEL.WEIGHTS model_final.pth

Runs the model over --dataset, else over each dataset of DATASETS.TEST, scoring its semantic
output (argmax of sem_seg) with SemanticPQEvaluator and CheckedSemSegEvaluator together; prints
one table (PQ, SQ, RQ, mIoU per dataset; --per-class adds a table per dataset) and writes it to
OUTPUT_DIR/semantic_pq_results.json, in percent. MODEL.WEIGHTS must be trained weights that fit
the model, as for `train_net.py --eval-only`. One process; on the CPU where there is no GPU.
Options after the flags are config overrides (KEY VALUE pairs). A problem with the config, the
weights or the data is reported in one line, with exit status 1.
"""
import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional


from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

# Importing mask_former registers its components and datasets.
from mask_former.config import cpu_fallback, load_config
from mask_former.data import build_test_loader
from mask_former.data.dataset_check import check_datasets_registered_and_loadable
from mask_former.engine import accelerate
from mask_former.errors import ConfigError, UserError
from mask_former.evaluation import CheckedSemSegEvaluator, SemanticPQEvaluator
from mask_former.weights import MaskFormerCheckpointer, check_weights

PROG = "evaluate_pq_for_semantic_segmentation.py"
RESULTS_FILE = "semantic_pq_results.json"
METRICS = ("PQ", "SQ", "RQ")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PQ, SQ, RQ (every class as stuff) and mIoU of a semantic segmentation model.")
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="config file; a relative path is also looked up in the repository")
    parser.add_argument("--dataset", metavar="NAME",
                        help="registered dataset to evaluate on (default: those of DATASETS.TEST)")
    parser.add_argument("--per-class", action="store_true",
                        help="also print PQ, SQ, RQ and IoU of each class (the JSON always has them)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return parser


def setup(args: argparse.Namespace):
    """The frozen config of `args`, on the CPU where CUDA is not available.

    Raises ConfigError where the model does not predict a semantic segmentation, and a weights
    error where MODEL.WEIGHTS is empty or not found.
    """
    cfg = load_config(args.config_file, args.opts)
    if args.dataset:
        cfg.DATASETS.TEST = (args.dataset,)
    if not cfg.DATASETS.TEST:
        raise ConfigError("No dataset to evaluate on: DATASETS.TEST is empty; pass --dataset NAME")
    if cfg.MODEL.META_ARCHITECTURE == "MaskFormer":
        test = cfg.MODEL.MASK_FORMER.TEST
        if not test.SEMANTIC_ON:
            raise ConfigError("MODEL.MASK_FORMER.TEST.SEMANTIC_ON is False: the model would not "
                              "predict the semantic segmentation this tool scores; set it True")
        # Only sem_seg is scored: the panoptic and instance post-processing would be time lost.
        test.PANOPTIC_ON = False
        test.INSTANCE_ON = False
    check_weights(cfg.MODEL.WEIGHTS, required=True)
    cfg = cpu_fallback(cfg)
    cfg.freeze()
    return cfg


def evaluate(cfg) -> Dict[str, Dict]:
    """{dataset name: {"PQ", "SQ", "RQ", "mIoU" (in %), "num_classes" (those in the PQ averages),
    "num_images", "per_class": {class name: {"PQ", "SQ", "RQ", "IoU"}}}} for DATASETS.TEST.

    A metric that is undefined (a class in neither predictions nor ground truth) is None.
    """
    sizes = check_datasets_registered_and_loadable(cfg, train=False)
    model = build_model(cfg)
    # Refuses weights that leave any of the model's weights unloaded, as --eval-only does.
    MaskFormerCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model = accelerate(model, cfg)
    results = {}
    for name in cfg.DATASETS.TEST:
        # PQ's evaluator first: it names a dataset without label maps before mIoU's fails on it.
        evaluator = DatasetEvaluators([SemanticPQEvaluator(name), CheckedSemSegEvaluator(name)])
        metrics = inference_on_dataset(model, build_test_loader(cfg, name), evaluator)
        pq, sem_seg = metrics["sem_seg_pq"], metrics["sem_seg"]
        classes = MetadataCatalog.get(name).stuff_classes
        results[name] = {
            **{key: pq[key] for key in METRICS},
            "mIoU": sem_seg["mIoU"],
            "num_classes": sum(f"PQ-{c}" in pq for c in classes),
            "num_images": sizes[name],
            "per_class": {c: {**{key: _number(pq.get(f"{key}-{c}")) for key in METRICS},
                              "IoU": _number(sem_seg.get(f"IoU-{c}"))} for c in classes},
        }
    return results


def _number(value) -> Optional[float]:
    """`value` as a float, None where undefined (missing or NaN: JSON has no NaN)."""
    if value is None or math.isnan(value):
        return None
    return float(value)


def results_table(results: Dict[str, Dict]) -> str:
    rows = [[name] + [values[key] for key in METRICS + ("mIoU",)] + [values["num_classes"]]
            for name, values in results.items()]
    return tabulate(rows, headers=["dataset", *METRICS, "mIoU", "#classes"], tablefmt="pipe",
                    floatfmt=".2f", numalign="right")


def per_class_table(per_class: Dict[str, Dict]) -> str:
    rows = [[name] + ["" if values[key] is None else values[key] for key in METRICS + ("IoU",)]
            for name, values in per_class.items()]
    return tabulate(rows, headers=["class", *METRICS, "IoU"], tablefmt="pipe", floatfmt=".2f",
                    numalign="right")


def write_results(cfg, results: Dict[str, Dict]) -> str:
    """Writes OUTPUT_DIR/semantic_pq_results.json; returns its path."""
    PathManager.mkdirs(cfg.OUTPUT_DIR)
    path = os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE)
    content = {"weights": cfg.MODEL.WEIGHTS, "datasets": results}
    with PathManager.open(path, "w") as f:
        json.dump(content, f, indent=1, allow_nan=False)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    # detectron2's inference_on_dataset logs the progress (and the speed) to its logger; the
    # checkpoint summary and the CPU fallback's warning come from mask_former's.
    for name in ("detectron2", "fvcore", "mask_former"):
        setup_logger(name=name)
    try:
        cfg = setup(args)
        results = evaluate(cfg)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        return 1
    path = write_results(cfg, results)
    print("PQ, SQ, RQ (every class as stuff) and mIoU, in %:")
    print(results_table(results))
    if args.per_class:
        for name, values in results.items():
            print(f"\nPer class on {name} (blank: the class is in neither predictions nor "
                  "ground truth):")
            print(per_class_table(values["per_class"]))
    print(f"\nWritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
