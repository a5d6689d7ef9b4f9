"""What the weight converters in tools/ share: reading a checkpoint, writing detectron2's format,
and the command line around a conversion.

A converter supplies the part that differs, a function from the input path to
{detectron2 parameter name: numpy array}, and runs `converter_main`:

    def convert_file(path: str) -> Dict[str, np.ndarray]:
        state_dict = read_state_dict(path, required=("conv1.weight",), kind="a torchvision ResNet")
        return {rename(name): tensor.numpy() for name, tensor in state_dict.items()}

    if __name__ == "__main__":
        sys.exit(converter_main(convert_file, description=__doc__, author="torchvision",
                                input_help="torchvision checkpoint (.pth)"))

The output is what DetectionCheckpointer loads as a third-party checkpoint: a pickled
{"model": {name: array}, "__author__": author, "matching_heuristics": True}, which lets detectron2
match names by suffix (so a backbone's names need no "backbone." prefix).
"""
import argparse
import os
import pickle
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .errors import UserError

# Where the tensors may be in a checkpoint: at the top, or under one of these keys.
STATE_DICT_KEYS = ("state_dict", "model")


class ConversionError(UserError, ValueError):
    """A checkpoint that cannot be read or converted, or an output that cannot be written."""


def _reason(error: BaseException) -> str:
    """The gist of an OSError or of torch.load's error, in one line."""
    text = getattr(error, "strerror", None) or str(error)
    if "WeightsUnpickler error:" in text:  # the problem, inside torch's advice on weights_only
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    text = " ".join(text.split()).split(". ")[0]  # torch's first sentence says what failed
    return text or type(error).__name__


def read_checkpoint(path: str, weights_only: bool = True) -> object:
    """torch.load of `path` on the CPU, with errors naming the file.

    weights_only=False unpickles arbitrary objects (such as the training config some official
    checkpoints hold), which runs code from the file: only for files from a trusted source.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ConversionError(f"cannot read {path} as a checkpoint ({_reason(error)})") from None


def read_state_dict(path: str, weights_only: bool = True, required: Sequence[str] = (),
                    kind: str = "the expected model") -> Dict[str, torch.Tensor]:
    """The {name: tensor} state dict in the checkpoint `path`: the checkpoint itself or its
    entry under one of STATE_DICT_KEYS. Refuses a file without one, or one lacking a `required`
    name (which tells that it is not `kind`)."""
    checkpoint = read_checkpoint(path, weights_only)
    state_dict = checkpoint
    if isinstance(checkpoint, dict):
        state_dict = next((checkpoint[key] for key in STATE_DICT_KEYS
                           if isinstance(checkpoint.get(key), dict)), checkpoint)
    if not isinstance(state_dict, dict) or not state_dict:
        raise ConversionError(f"{path}: no state dict in it (a {type(checkpoint).__name__})")
    not_tensors = [name for name, value in state_dict.items() if not torch.is_tensor(value)]
    if not_tensors:
        first = not_tensors[0]
        raise ConversionError(
            f"{path}: not a state dict of tensors ({len(not_tensors)} of its {len(state_dict)} "
            f"entries are not tensors, e.g. {first!r} of type {type(state_dict[first]).__name__})"
        )
    missing = [name for name in required if name not in state_dict]
    if missing:
        raise ConversionError(f"{path} does not look like {kind}: it has no {missing[0]} "
                              f"(its first entry is {next(iter(state_dict))})")
    return state_dict


def to_numpy(state_dict: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """{name: tensor} -> {name: numpy array}, as detectron2's .pkl checkpoints hold them."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in state_dict.items()}


def write_d2_checkpoint(model: Dict[str, np.ndarray], path: str, author: str) -> None:
    """Writes `model` as a detectron2 third-party checkpoint. The file appears whole or not at
    all: it is written next to `path` and renamed, so an interrupted run leaves no half file."""
    partial = f"{path}.partial"
    data = {"model": model, "__author__": author, "matching_heuristics": True}
    try:
        with open(partial, "wb") as f:
            pickle.dump(data, f)
        os.replace(partial, path)
    except OSError as error:
        raise ConversionError(f"cannot write {path} ({_reason(error)})") from None
    finally:
        if os.path.exists(partial):  # the write failed or was interrupted
            os.remove(partial)


def converter_main(convert: Callable[[str], Dict[str, np.ndarray]], *, description: str,
                   author: str, input_help: str, argv: Optional[List[str]] = None) -> int:
    """The command line of a converter: `INPUT OUTPUT`; returns the exit status.

    `convert` maps the input path to {detectron2 name: numpy array} (raising ConversionError for
    an input it cannot use); `author` is recorded in the output. Problems are printed as one
    line, "error: ...", with status 1.
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    args = parser.parse_args(argv)
    try:
        if (os.path.exists(args.input) and os.path.exists(args.output)
                and os.path.samefile(args.input, args.output)):
            raise ConversionError(f"{args.output} is the input: pass another output file")
        model = convert(args.input)
        write_d2_checkpoint(model, args.output, author)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(model)} tensors to {args.output}")
    return 0
