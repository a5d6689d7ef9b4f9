"""Reading a Hugging Face transformers checkpoint directory and renaming its weights.

A directory of `save_pretrained` holds config.json, the weights (model.safetensors, possibly
sharded with an index, or pytorch_model.bin) and usually preprocessor_config.json (the image
processor's normalisation and sizes). The per-architecture tables (maskformer.py) say how each
transformers parameter name becomes this project's; `rename_weights` applies one.
"""
import json
import re
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch

from ..errors import UserError

# A rename: (regular expression on the transformers name, replacement string or function). The
# first pattern that matches wins. A replacement ending in FUSE + "q" (or "k", "v") marks one
# part of a fused query/key/value projection: the three parts are concatenated in q, k, v order.
Rename = Tuple[str, Union[str, Callable[[re.Match], str]]]
FUSE = "::"
FUSED_ORDER = ("q", "k", "v")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class ConversionError(UserError, ValueError):
    """A directory that is not a convertible Hugging Face checkpoint; the message says why."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConversionError(f"{path}: cannot read it as JSON ({error})") from None


def load_hf_config(hf_dir: Path):
    """The checkpoint's transformers config object (AutoConfig, with the library's defaults for
    the keys `save_pretrained` leaves out)."""
    if not (hf_dir / "config.json").is_file():
        raise ConversionError(f"{hf_dir}: not a Hugging Face checkpoint directory (no config.json)")
    try:
        from transformers import AutoConfig
    except ImportError:
        raise ConversionError("reading a Hugging Face checkpoint needs transformers: "
                              "pip install transformers") from None
    model_type = read_json(hf_dir / "config.json").get("model_type")
    try:
        return AutoConfig.from_pretrained(str(hf_dir))
    except (ValueError, KeyError, TypeError) as error:
        raise ConversionError(f"{hf_dir}/config.json (model_type {model_type!r}): transformers "
                              f"cannot read it ({error})") from None


def load_hf_weights(hf_dir: Path) -> Dict[str, torch.Tensor]:
    """All tensors of the checkpoint, sharded or not, safetensors or .bin."""
    found = [name for name in WEIGHT_FILES if (hf_dir / name).is_file()]
    if not found:
        raise ConversionError(f"{hf_dir}: no weights ({', '.join(WEIGHT_FILES)})")
    name = found[0]
    if name.endswith(".index.json"):
        shards = sorted(set(read_json(hf_dir / name)["weight_map"].values()))
    else:
        shards = [name]
    weights = {}
    for shard in shards:
        path = hf_dir / shard
        if shard.endswith(".safetensors"):
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise ConversionError(f"{path}: reading safetensors needs the safetensors "
                                      "package: pip install safetensors") from None
            weights.update(load_file(str(path)))
        else:
            weights.update(torch.load(str(path), map_location="cpu", weights_only=True))
    return weights


def rename_weights(weights: Dict[str, torch.Tensor], renames: Sequence[Rename],
                   dropped: Sequence[str]) -> Dict[str, torch.Tensor]:
    """transformers' state dict -> this project's, by `renames`; names matching a pattern of
    `dropped` (training-only buffers, unused layers) are left out. A name no pattern covers is a
    gap in the table, reported with all others."""
    converted, parts, unknown = {}, {}, []
    for name, tensor in weights.items():
        if any(re.search(pattern, name) for pattern in dropped):
            continue
        for pattern, replacement in renames:
            new_name, count = re.subn(pattern, replacement, name)
            if count:
                break
        else:
            unknown.append(name)
            continue
        if FUSE in new_name:
            base, part = new_name.split(FUSE)
            parts.setdefault(base, {})[part] = tensor
        else:
            converted[new_name] = tensor
    if unknown:
        raise ConversionError(f"{len(unknown)} weights have no counterpart in this project: "
                              + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
    for base, pieces in parts.items():
        missing: List[str] = [p for p in FUSED_ORDER if p not in pieces]
        if missing:
            raise ConversionError(f"{base}: the checkpoint lacks its {missing} projection(s)")
        converted[base] = torch.cat([pieces[p] for p in FUSED_ORDER])
    return converted
