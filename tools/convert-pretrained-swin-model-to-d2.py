#!/usr/bin/env python
"""Converts an official Swin Transformer ImageNet checkpoint to detectron2's format.

    python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth swin_tiny_patch4_window7_224.pkl

The parameter names of `D2SwinTransformer` are those of the official checkpoints, so this only
changes the container; the classification head is dropped when the model loads (it has no
counterpart, and detectron2 reports it as unused).
"""
import sys
from typing import Dict

import numpy as np


from mask_former.checkpoint_conversion import (
    converter_main, read_state_dict, to_numpy,
)


def convert_file(path: str) -> Dict[str, np.ndarray]:
    """Official Swin checkpoint ({"model": state_dict} or a state_dict) -> {name: numpy array}.

    Read with weights_only=False, as before: checkpoints saved by the official training code also
    hold its config (a yacs CfgNode), which weights_only=True refuses.
    """
    return to_numpy(read_state_dict(path, weights_only=False,
                                    required=("patch_embed.proj.weight",),
                                    kind="a Swin Transformer"))


def main(argv=None) -> int:
    return converter_main(convert_file, description=__doc__, author="third_party",
                          input_help="official Swin checkpoint (.pth)", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
