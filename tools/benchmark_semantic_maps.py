#!/usr/bin/env python
"""Times semantic inference's maps alone, on one CUDA GPU; prints one JSON line per batch size
and precision.

For the recipe's sizes (100 queries, 150 classes, (128, 176) mask logits upsampled to
(512, 704)) it times, with triton.testing.do_bench (milliseconds):
  eager_marginalise_ms    postprocessing.marginalise (cuBLAS's batched product)
  triton_<config>_ms      semantic_maps_triton.marginalise_triton per block configuration
                          <block_k>x<block_p>q<block_q>w<num_warps>s<num_stages> (bf16 and
                          fp16 only: float32 keeps cuBLAS)
  eager_maps_ms           postprocessing.semantic_maps (upsample, sigmoid, product)
  triton_maps_ms          semantic_maps_triton (what ACCELERATION.TRITON_SEMANTIC_MAPS installs)
and each product's largest error against a float64 marginalise (`*_err64`).

    python tools/benchmark_semantic_maps.py --batch-sizes 16 1 --precision bf16 fp32
"""
import argparse
import json
import sys

import torch

# (block_k, block_p, block_q, num_warps, num_stages); None: all queries (up to 128) in one block
CONFIGS = ((64, 128, None, 4, 1), (32, 128, None, 4, 1), (64, 256, None, 8, 1),
           (128, 128, None, 8, 1), (64, 64, None, 4, 1), (64, 128, 32, 4, 2))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--precision", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"],
                        help="fp32, or bf16 / fp16 autocast as inference runs it")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--mask-size", type=int, nargs=2, default=[128, 176], metavar=("H", "W"))
    parser.add_argument("--size", type=int, nargs=2, default=[512, 704], metavar=("H", "W"),
                        help="the padded input size the maps are upsampled to")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmark_semantic_maps.py needs a CUDA GPU (and the triton package)",
              file=sys.stderr)
        return 2
    from triton.runtime.errors import OutOfResources
    from triton.testing import do_bench

    from mask_former.modeling.postprocessing import marginalise, semantic_maps
    from mask_former.modeling.semantic_maps_triton import marginalise_triton, semantic_maps_triton

    size = tuple(args.size)
    for batch in args.batch_sizes:
        generator = torch.Generator(device="cuda").manual_seed(0)
        cls = torch.randn(batch, args.queries, args.classes + 1, device="cuda",
                          generator=generator)
        probs = torch.rand(batch, args.queries, *size, device="cuda", generator=generator)
        logits = 3 * torch.randn(batch, args.queries, *args.mask_size, device="cuda",
                                 generator=generator)
        exact = marginalise(cls.double(), probs.double())
        for name in args.precision:
            dtype = DTYPES[name]
            row = {"case": "semantic_maps", "batch_size": batch, "precision": name,
                   "device": torch.cuda.get_device_name()}
            autocast = dtype != torch.float32
            p, x = probs.to(dtype), logits.to(dtype)
            with torch.autocast("cuda", dtype=dtype, enabled=autocast):
                row["eager_marginalise_ms"] = do_bench(lambda: marginalise(cls, p))
                row["eager_marginalise_err64"] = (marginalise(cls, p).double() - exact
                                                  ).abs().max().item()
                for block_k, block_p, block_q, warps, stages in CONFIGS if autocast else ():
                    tag = f"triton_{block_k}x{block_p}q{block_q or 'all'}w{warps}s{stages}"
                    run = lambda: marginalise_triton(cls, p, block_k=block_k, block_p=block_p,
                                                     block_q=block_q, num_warps=warps,
                                                     num_stages=stages)
                    try:
                        result = run()
                    except OutOfResources:  # a configuration this GPU cannot launch
                        row[tag] = "out of shared memory"
                        continue
                    row[tag + "_ms"] = do_bench(run)
                    row[tag + "_err64"] = (result.double() - exact).abs().max().item()
                row["eager_maps_ms"] = do_bench(lambda: semantic_maps(cls, x, size))
                row["triton_maps_ms"] = do_bench(lambda: semantic_maps_triton(cls, x, size))
            print(json.dumps(row), flush=True)
        del exact, probs
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
