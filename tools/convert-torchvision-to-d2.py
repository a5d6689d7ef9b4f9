#!/usr/bin/env python
"""Converts a torchvision ResNet checkpoint to detectron2's format.

    python tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth R-50.pkl

Then train with MODEL.WEIGHTS R-50.pkl (and MODEL.RESNETS.STRIDE_IN_1X1 False, as the MaskFormer
configs set). The output is what the configs' `detectron2://ImageNetPretrained/torchvision/R-50.pkl`
names, for machines that cannot download it.
"""
import argparse
import pickle
import re
import sys

import torch

# torchvision name pattern -> detectron2 name, applied in order.
RENAMES = [
    (r"^conv1\.", "stem.conv1."),
    (r"^bn1\.", "stem.conv1.norm."),
    (r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
    (r"\.bn(\d)\.", lambda m: f".conv{m.group(1)}.norm."),
]


def convert_torchvision_resnet(state_dict: dict) -> dict:
    """torchvision ResNet state_dict -> {detectron2 name: numpy array}; drops fc and counters."""
    converted = {}
    for name, tensor in state_dict.items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        new_name = name
        for pattern, replacement in RENAMES:
            new_name = re.sub(pattern, replacement, new_name)
        converted[new_name] = tensor.detach().cpu().numpy()
    return converted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="torchvision checkpoint (.pth), a state_dict")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    args = parser.parse_args(argv)
    try:
        state_dict = torch.load(args.input, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        print(f"error: cannot read {args.input}: {error}", file=sys.stderr)
        return 1
    state_dict = state_dict.get("state_dict", state_dict)
    model = convert_torchvision_resnet(state_dict)
    with open(args.output, "wb") as f:
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, f)
    print(f"wrote {len(model)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
