#!/usr/bin/env python
"""Exports a trained MaskFormer to ONNX (default) or TorchScript, for inference without this project.

    python tools/export_model.py --config-file configs/ade20k/maskformer_R50.yaml \\
        --output model.onnx MODEL.WEIGHTS model_final.pkl
    python tools/export_model.py --config-file CONFIG --format torchscript --output model.pt \\
        MODEL.WEIGHTS model_final.pth

The graph takes `image`, a (1, 3, H, W) float32 tensor of 0-255 values in the config's
INPUT.FORMAT channel order (what the model's own "image" input is, after the test-time resize),
with H and W dynamic, and returns `pred_logits` (1, Q, K+1), `pred_masks` (1, Q, H_pad/4, W_pad/4)
for the input padded to a multiple of the size divisibility (32), and `sem_seg` (1, K, H, W),
the semantic scores. Normalisation and padding are inside the graph. `demo/demo.py --onnx FILE`
runs the ONNX file through onnxruntime. ONNX needs the `export` extra (`pip install -e
'.[export]'`).

After writing the file the tool runs it (onnxruntime, or torch.jit.load) and PyTorch on random
images of two sizes and prints the relative errors; beyond --tolerance it exits with status 1.
Exporting runs on the CPU and takes a minute or two for an R50. Options after the flags are
config overrides (KEY VALUE pairs).
"""
import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch
from detectron2.modeling import build_model

from mask_former.config import load_config
from mask_former.errors import UserError
from mask_former.export import (
    EXPORTERS,
    FORMATS,
    RUNNERS,
    ExportableMaskFormer,
    ExportError,
    check_export,
    check_sizes,
    export_metadata,
)
from mask_former.weights import MaskFormerCheckpointer, check_weights

logger = logging.getLogger("mask_former_export")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export_model.py", description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="config file; a relative path is also looked up in the repository")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="the file to write (model.onnx, model.pt)")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx (onnxruntime and other ONNX runtimes) or torchscript "
                             "(torch.jit.load, traced) (default: %(default)s)")
    parser.add_argument("--dynamo", action="store_true",
                        help="onnx: through torch.onnx's torch.export-based exporter instead of "
                             "its TorchScript-based one (same graph; minutes for a Swin on a CPU)")
    parser.add_argument("--sample-size", type=int, nargs=2, metavar=("H", "W"),
                        help="image size to trace with (any size serves; default: "
                             "INPUT.MIN_SIZE_TEST by 4/3 of it)")
    parser.add_argument("--tolerance", type=float, default=1e-3, metavar="REL",
                        help="largest relative error of the export against PyTorch that is "
                             "accepted (default: %(default)s)")
    parser.add_argument("--no-check", action="store_true",
                        help="do not run the written file against PyTorch")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS model.pkl")
    return parser


def setup_cfg(args: argparse.Namespace):
    """The frozen config of `args`, on the CPU (exports are traced there)."""
    cfg = load_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    check_weights(cfg.MODEL.WEIGHTS, required=True)
    cfg.freeze()
    return cfg


def export(args: argparse.Namespace) -> int:
    cfg = setup_cfg(args)
    model = build_model(cfg)
    MaskFormerCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # refuses weights of another model
    module = ExportableMaskFormer.from_model(model)
    size = args.sample_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST * 4 // 3)
    example = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 255

    output = Path(args.output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")  # a killed export leaves no half file
    logger.info(f"Exporting {args.config_file} to {args.format} at {size[0]}x{size[1]} "
                "(a minute or two on a CPU)")
    start = time.perf_counter()
    options = {"dynamo": True} if args.dynamo else {}
    if args.dynamo and args.format != "onnx":
        raise ExportError("--dynamo applies to --format onnx only")
    metadata = export_metadata(cfg)
    EXPORTERS[args.format](module, example, str(partial), metadata, **options)
    os.replace(partial, output)
    logger.info(f"Wrote {output} ({output.stat().st_size / 2 ** 20:.1f} MiB) in "
                f"{time.perf_counter() - start:.0f} s")
    if args.no_check:
        return 0

    sizes = check_sizes(size, module.size_divisibility)
    results = check_export(module, RUNNERS[args.format](str(output)), sizes)
    worst = 0.0
    for (height, width), errors in results.items():
        logger.info(f"{args.format} vs PyTorch at {height}x{width}: relative error "
                    + ", ".join(f"{name} {error:.1e}" for name, error in errors.items()))
        worst = max(worst, *errors.values())
    if worst > args.tolerance:
        raise ExportError(f"{output}: the export differs from PyTorch by {worst:.1e} (relative), "
                          f"more than --tolerance {args.tolerance:g}; try the other --format")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    try:
        return export(args)
    except UserError as error:
        logger.error(str(error))
        return 1


if __name__ == "__main__":
    sys.exit(main())
