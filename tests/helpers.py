"""Small helpers shared by the tests."""
import importlib.util
import sys
from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg

from mask_former import add_mask_former_config


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-12)).item()


def config_from_yaml(text: str) -> CfgNode:
    """A MaskFormer config with `text` (a dumped config) merged in."""
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.merge_from_other_cfg(CfgNode.load_cfg(text))
    return cfg


def load_script(path: Path, name: str):
    """Imports the script at `path` as module `name`, with its directory on sys.path first, as
    `python path` runs it (demo/demo.py imports its neighbour predictor.py); imported once."""
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
