#!/usr/bin/env python
"""Converts a torchvision ResNet checkpoint to detectron2's format.

    python tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth R-50.pkl

Then train with MODEL.WEIGHTS R-50.pkl (and MODEL.RESNETS.STRIDE_IN_1X1 False, as the MaskFormer
configs set). The output is what the configs' `detectron2://ImageNetPretrained/torchvision/R-50.pkl`
names, for machines that cannot download it.
"""
import re
import sys
from typing import Dict

import numpy as np


from mask_former.checkpoint_conversion import (
    converter_main, read_state_dict, to_numpy,
)

# torchvision name pattern -> detectron2 name, applied in order.
RENAMES = [
    (r"^conv1\.", "stem.conv1."),
    (r"^bn1\.", "stem.conv1.norm."),
    (r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
    (r"\.bn(\d)\.", lambda m: f".conv{m.group(1)}.norm."),
]


def convert_torchvision_resnet(state_dict: dict) -> Dict[str, np.ndarray]:
    """torchvision ResNet state_dict -> {detectron2 name: numpy array}; drops fc and counters."""
    converted = {}
    for name, array in to_numpy(state_dict).items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        new_name = name
        for pattern, replacement in RENAMES:
            new_name = re.sub(pattern, replacement, new_name)
        converted[new_name] = array
    return converted


def convert_file(path: str) -> Dict[str, np.ndarray]:
    return convert_torchvision_resnet(
        read_state_dict(path, required=("conv1.weight",),
                        kind="a torchvision ResNet")
    )


def main(argv=None) -> int:
    return converter_main(convert_file, description=__doc__, author="torchvision",
                          input_help="torchvision checkpoint (.pth), a state_dict", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
