#!/usr/bin/env python
"""Converts an official Swin Transformer ImageNet checkpoint to detectron2's format.

    python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth swin_tiny_patch4_window7_224.pkl

The parameter names of `D2SwinTransformer` are those of the official checkpoints, so this only
changes the container; the classification head is dropped when the model loads (it has no
counterpart, and detectron2 reports it as unused).
"""
import argparse
import pickle
import sys

import torch


def convert_swin(checkpoint: dict) -> dict:
    """Official Swin checkpoint ({"model": state_dict} or a state_dict) -> {name: numpy array}."""
    state_dict = checkpoint.get("model", checkpoint)
    return {name: tensor.detach().cpu().numpy() for name, tensor in state_dict.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="official Swin checkpoint (.pth)")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    args = parser.parse_args(argv)
    try:
        checkpoint = torch.load(args.input, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        print(f"error: cannot read {args.input}: {error}", file=sys.stderr)
        return 1
    model = convert_swin(checkpoint)
    with open(args.output, "wb") as f:
        pickle.dump({"model": model, "__author__": "third_party", "matching_heuristics": True}, f)
    print(f"wrote {len(model)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
