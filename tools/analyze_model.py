#!/usr/bin/env python
"""Parameters, FLOPs, activations and structure of a MaskFormer model, as the official
repository's tools/analyze_model.py reports them (fvcore, through detectron2's analysis tools).

    python tools/analyze_model.py --config-file configs/ade20k/maskformer_R50.yaml \\
        --tasks parameter flop MODEL.WEIGHTS ""
    python tools/analyze_model.py --config-file CONFIG --tasks flop --num-inputs 100
    python tools/analyze_model.py --config-file CONFIG --tasks flop --use-fixed-input-size

FLOPs are counted on images of the config's first test dataset, resized as at test time, and
averaged over --num-inputs of them. Where that dataset is not on disk, they are counted on a
synthetic image of the test size (INPUT.MIN_SIZE_TEST square), which the log says.
--use-fixed-input-size counts on an INPUT.CROP.SIZE square, as the official semantic
segmentation numbers are (MaskFormer R50 on ADE20K: about 53 GFLOPs at 512x512, 41M
parameters). fvcore counts one FLOP per multiply-add. Runs on the CPU where there is no GPU.
Options after the flags are config overrides (KEY VALUE pairs).
"""
import argparse
import logging
import sys
from collections import Counter
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import tqdm
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model
from detectron2.utils.analysis import (
    FlopCountAnalysis,
    activation_count_operators,
    parameter_count,
    parameter_count_table,
)
from fvcore.nn import flop_count_table

import mask_former.data.datasets  # noqa: F401  (registers the datasets)
from mask_former.config import cpu_fallback, load_config
from mask_former.errors import UserError
from mask_former.weights import MaskFormerCheckpointer

logger = logging.getLogger("mask_former_analyze_model")

TASKS = ("flop", "activation", "parameter", "structure")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="analyze_model.py",
        description="Parameters, FLOPs, activations and structure of a MaskFormer config.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="config file; a relative path is also looked up in the repository")
    parser.add_argument("--tasks", nargs="+", required=True, metavar="TASK",
                        help="any of: " + ", ".join(TASKS))
    parser.add_argument("-n", "--num-inputs", type=int, default=100,
                        help="number of test images to average the FLOPs and activations over "
                             "(default: %(default)s)")
    parser.add_argument("--use-fixed-input-size", action="store_true",
                        help="count FLOPs on an INPUT.CROP.SIZE square, as the official "
                             "semantic segmentation numbers are")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS model.pkl")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = get_parser()
    args = parser.parse_args(argv)
    # `--tasks flop MODEL.WEIGHTS x` gives --tasks everything up to the next flag: the words
    # after the task names are config overrides.
    tasks = []
    for i, word in enumerate(args.tasks):
        if word not in TASKS:
            if not tasks or word.lower() in TASKS:
                parser.error(f"--tasks: unknown task {word!r}; choose from {', '.join(TASKS)}")
            args.opts = args.tasks[i:] + args.opts
            break
        tasks.append(word)
    args.tasks = tasks
    if args.num_inputs < 1:
        parser.error("--num-inputs must be at least 1")
    return args


def setup(args: argparse.Namespace):
    """The frozen config of `args` (no loader workers unless the overrides ask for them), on the
    CPU where CUDA is not available."""
    cfg = cpu_fallback(load_config(args.config_file, ["DATALOADER.NUM_WORKERS", "0"] + args.opts))
    cfg.freeze()
    return cfg


def build(cfg) -> torch.nn.Module:
    """The model in eval mode, with MODEL.WEIGHTS loaded where it can be.

    Weights change none of the counts (only, slightly, the panoptic post-processing's), so a
    checkpoint that cannot be found, read or loaded is reported and skipped.
    """
    model = build_model(cfg)
    model.eval()
    try:
        MaskFormerCheckpointer(model, allow_partial=True).load(cfg.MODEL.WEIGHTS)
    except UserError as error:
        logger.warning(f"{error}; counting with random weights")
    return model


def synthetic_input(height: int, width: int) -> List[dict]:
    """One (3, height, width) image in 0-255, as detectron2's test loader gives it."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), generator=generator).float()
    return [{"image": image, "height": height, "width": width}]


def analysis_inputs(cfg, num_inputs: int, use_fixed_input_size: bool
                    ) -> Tuple[Iterator[List[dict]], int]:
    """Batches of one image to analyse, and how many there are.

    Test images where the test dataset loads, else one synthetic image of the test size.
    """
    size = cfg.INPUT.MIN_SIZE_TEST
    if use_fixed_input_size:
        if cfg.INPUT.CROP.TYPE.startswith("absolute"):
            size = int(cfg.INPUT.CROP.SIZE[0])
            logger.info(f"Using a fixed {size}x{size} input (INPUT.CROP.SIZE)")
        else:  # a relative crop has no size in pixels
            logger.warning(f"INPUT.CROP.TYPE is {cfg.INPUT.CROP.TYPE!r}, not a size in pixels: "
                           f"using a fixed {size}x{size} input (INPUT.MIN_SIZE_TEST) instead")
        return iter([synthetic_input(size, size)]), 1
    dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
    if dataset is not None:
        try:
            batches = iter(build_detection_test_loader(cfg, dataset))
            first = next(batches)
        except Exception as error:  # unregistered, missing files, unreadable annotations...
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            logger.warning(f"Test dataset {dataset!r} is not available ({reason}); "
                           f"using a synthetic {size}x{size} input instead")
        else:
            def take() -> Iterator[List[dict]]:
                yield first
                for _, batch in zip(range(num_inputs - 1), batches):
                    yield batch
            return take(), num_inputs
    else:
        logger.warning(f"No test dataset in the config: using a synthetic {size}x{size} input")
    return iter([synthetic_input(size, size)]), 1


def _sdpa_flop_jit(inputs, outputs) -> int:
    """Multiply-adds of aten::scaled_dot_product_attention (the model's GPU attention path),
    which fvcore does not count: q k^T and the weighted sum of v, as the CPU path's matmuls."""
    from fvcore.nn.jit_handles import get_shape

    q_shape, k_shape, v_shape = (get_shape(x) for x in inputs[:3])
    batch_heads = int(np.prod(q_shape[:-2]))
    length_q, dim = q_shape[-2:]
    length_k, dim_v = k_shape[-2], v_shape[-1]
    return batch_heads * length_q * length_k * (dim + dim_v)


def do_flop(cfg, model, inputs: Iterator[List[dict]], count: int) -> Dict[str, object]:
    """GFLOPs per image, mean and standard deviation, and per operator."""
    by_operator = Counter()
    totals = []
    analysis = None
    for index, batch in zip(tqdm.trange(count, desc="flop", disable=count < 2), inputs):
        analysis = FlopCountAnalysis(model, batch)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
        if index > 0:
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_operator += analysis.by_operator()
        totals.append(analysis.total())
    num = len(totals)
    logger.info("Flops table computed from only one input sample:\n" + flop_count_table(analysis))
    per_operator = {k: v / num / 1e9 for k, v in by_operator.items()}
    logger.info("Average GFlops for each type of operators:\n"
                + str([(k, round(v, 4)) for k, v in per_operator.items()]))
    mean, std = float(np.mean(totals)) / 1e9, float(np.std(totals)) / 1e9
    logger.info(f"Total GFlops: {mean:.3g}±{std:.2g} (over {num} input(s))")
    return {"gflops": mean, "gflops_std": std, "by_operator": per_operator, "num_inputs": num}


def do_activation(cfg, model, inputs: Iterator[List[dict]], count: int) -> Dict[str, object]:
    """Million activations per image, mean and standard deviation."""
    by_operator = Counter()
    totals = []
    for _, batch in zip(tqdm.trange(count, desc="activation", disable=count < 2), inputs):
        counts = activation_count_operators(model, batch)
        by_operator += counts
        totals.append(sum(counts.values()))
    num = len(totals)
    logger.info("(Million) Activations for each type of operators:\n"
                + str([(k, round(v / num, 4)) for k, v in by_operator.items()]))
    mean, std = float(np.mean(totals)), float(np.std(totals))
    logger.info(f"Total (Million) Activations: {mean:.3g}±{std:.2g} (over {num} input(s))")
    return {"mactivations": mean, "mactivations_std": std, "num_inputs": num}


def do_parameter(model) -> int:
    logger.info("Parameter count:\n" + parameter_count_table(model, max_depth=5))
    total = parameter_count(model)[""]
    logger.info(f"Total parameters: {total:,} ({total / 1e6:.1f}M)")
    return total


def do_structure(model) -> str:
    structure = str(model)
    logger.info("Model structure:\n" + structure)
    return structure


def analyze(cfg, tasks: List[str], num_inputs: int = 1, use_fixed_input_size: bool = False
            ) -> Dict[str, object]:
    """Runs `tasks` on the model of `cfg`; returns each task's result by name."""
    model = build(cfg)
    results = {}
    for task in tasks:
        if task == "parameter":
            results[task] = do_parameter(model)
        elif task == "structure":
            results[task] = do_structure(model)
        else:
            inputs, count = analysis_inputs(cfg, num_inputs, use_fixed_input_size)
            with torch.no_grad():
                run = do_flop if task == "flop" else do_activation
                results[task] = run(cfg, model, inputs, count)
    return results


class _StdoutHandler(logging.StreamHandler):
    """Writes to sys.stdout as it is at each message (callers and pytest may replace it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(loggers=("mask_former_analyze_model",)) -> None:
    """Sends the report (and the messages of `loggers`) to stdout; safe to call repeatedly."""
    for name in loggers:
        target = logging.getLogger(name)
        target.setLevel(logging.INFO)
        if not any(isinstance(h, _StdoutHandler) for h in target.handlers):
            handler = _StdoutHandler()
            handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s",
                                                   datefmt="%H:%M:%S"))
            target.addHandler(handler)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        cfg = setup(args)
    except UserError as error:
        logger.error(str(error))
        return 1
    analyze(cfg, args.tasks, args.num_inputs, args.use_fixed_input_size)
    return 0


if __name__ == "__main__":
    configure_logging(("mask_former_analyze_model", "fvcore", "detectron2", "mask_former"))
    sys.exit(main())
