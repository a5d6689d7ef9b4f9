"""Small helpers shared by the tests."""
import contextlib

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask_former import add_mask_former_config


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-12)).item()


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, what: str,
                          tolerance: float) -> None:
    """Same shape, and a relative error (of the L2 norm) of at most `tolerance`."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = relative_error(actual, expected)
    assert err <= tolerance, f"{what}: relative error {err:.2e} > {tolerance}"


def config_from_yaml(text: str) -> CfgNode:
    """A MaskFormer config with `text` (a dumped config) merged in."""
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.merge_from_other_cfg(CfgNode.load_cfg(text))
    return cfg


@contextlib.contextmanager
def temporary_names(*names):
    """Removes test-only dataset names from the catalogs afterwards."""
    try:
        yield names
    finally:
        for name in names:
            if name in DatasetCatalog:
                DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
