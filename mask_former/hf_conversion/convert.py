"""The conversion of a Hugging Face checkpoint directory into model.pth, config.yaml and
metadata.json of this project (see the package docstring)."""
import logging
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Dict

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from ..config import default_config
from ..data.metadata_file import write_metadata
from . import mask2former, maskformer
from .checkpoint import ConversionError, load_hf_config, load_hf_weights, read_json, rename_weights

logger = logging.getLogger(__name__)

# transformers architecture name -> the module converting it.
ARCHITECTURES: Dict[str, ModuleType] = {maskformer.ARCHITECTURE: maskformer,
                                        mask2former.ARCHITECTURE: mask2former}
MODEL_TYPES = {"maskformer": maskformer.ARCHITECTURE, "mask2former": mask2former.ARCHITECTURE}

# The defaults of transformers' MaskFormer image processor, for directories without
# preprocessor_config.json: ImageNet's mean and std on 0-1 values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def architecture_of(hf_config, hf_dir: Path) -> ModuleType:
    names = list(getattr(hf_config, "architectures", None) or [])
    if not names and hf_config.model_type in MODEL_TYPES:  # a config saved without a model class
        names = [MODEL_TYPES[hf_config.model_type]]
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ConversionError(
        f"{hf_dir}: {', '.join(names) or hf_config.model_type} is not a supported architecture "
        f"(supported: {', '.join(sorted(ARCHITECTURES))})")


def preprocessing_settings(hf_dir: Path) -> dict:
    """PIXEL_MEAN/STD on 0-255 RGB values and the test sizes of the image processor's config."""
    path = hf_dir / "preprocessor_config.json"
    processor = read_json(path) if path.is_file() else {}
    if not processor:
        logger.warning(f"{path} not found: normalising with the MaskFormer image processor's "
                       "defaults (ImageNet mean and std)")
    scale = 1.0 / processor.get("rescale_factor", 1 / 255) if processor.get("do_rescale", True) else 1.0
    if processor.get("do_normalize", True):
        mean = [m * scale for m in processor.get("image_mean", IMAGENET_MEAN)]
        std = [s * scale for s in processor.get("image_std", IMAGENET_STD)]
    else:
        mean, std = [0.0, 0.0, 0.0], [scale] * 3
    settings = {"MODEL.PIXEL_MEAN": mean, "MODEL.PIXEL_STD": std, "INPUT.FORMAT": "RGB"}
    size = processor.get("size") or {}
    if isinstance(size, dict) and size.get("shortest_edge"):
        settings["INPUT.MIN_SIZE_TEST"] = int(size["shortest_edge"])
        if size.get("longest_edge"):
            settings["INPUT.MAX_SIZE_TEST"] = int(size["longest_edge"])
    if processor.get("size_divisor"):
        settings["MODEL.MASK_FORMER.SIZE_DIVISIBILITY"] = int(processor["size_divisor"])
    return settings


def set_key(cfg: CfgNode, key: str, value) -> None:
    """cfg[key] = value for a dotted key that exists, keeping a tuple a tuple."""
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    if isinstance(node[last], tuple):
        value = tuple(value)
    node[last] = value


def class_names(hf_config) -> list:
    id2label = {int(k): v for k, v in hf_config.id2label.items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise ConversionError(f"id2label ids {sorted(id2label)} are not 0 .. K-1")
    return [id2label[i] for i in range(len(id2label))]


def dataset_name(hf_config, hf_dir: Path) -> str:
    source = getattr(hf_config, "_name_or_path", "") or hf_dir.resolve().name
    return "hf_" + re.sub(r"[^A-Za-z0-9]+", "_", Path(source).name).strip("_").lower()


def convert_hf_checkpoint(hf_dir, out_dir) -> CfgNode:
    """Writes out_dir/model.pth, config.yaml and metadata.json; returns the config."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir}: no such directory")
    hf_config = load_hf_config(hf_dir)
    architecture = architecture_of(hf_config, hf_dir)
    cfg = default_config()
    for key, value in {**architecture.config_settings(hf_config),
                       **preprocessing_settings(hf_dir)}.items():
        set_key(cfg, key, value)
    name = dataset_name(hf_config, hf_dir)
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = (name,)
    cfg.MODEL.DEVICE = "cpu" if not torch.cuda.is_available() else "cuda"
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / "model.pth"
    cfg.MODEL.WEIGHTS = str(weights_path.resolve())

    weights = rename_weights(load_hf_weights(hf_dir), architecture.weight_renames(hf_config),
                             architecture.DROPPED)
    check_complete(cfg, weights, hf_dir)
    partial = weights_path.with_name(weights_path.name + ".partial")
    torch.save({"model": weights, "__author__": f"transformers {architecture.ARCHITECTURE} "
                "converted by tools/convert-hf-to-d2.py"}, partial)
    os.replace(partial, weights_path)
    (out_dir / "config.yaml").write_text(cfg.dump())
    write_metadata(out_dir, name, class_names(hf_config))
    return cfg


def check_complete(cfg: CfgNode, weights: Dict[str, torch.Tensor], hf_dir: Path) -> None:
    """Loads the converted weights into the model the config builds, strictly."""
    build_cfg = cfg.clone()
    build_cfg.MODEL.DEVICE = "cpu"
    model = build_model(build_cfg)
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shapes that differ
        raise ConversionError(f"{hf_dir}: the converted weights do not fit the model of the "
                              f"converted config: {' '.join(str(error).split())[:500]}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {result.missing_keys[:5]}")
    if result.unexpected_keys:
        problems.append(f"unexpected {result.unexpected_keys[:5]}")
    if problems:
        raise ConversionError(f"{hf_dir}: the converted weights do not fit the model of the "
                              f"converted config: " + "; ".join(problems))
