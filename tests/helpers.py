"""Small helpers shared by the tests."""
import contextlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from mask_former import add_mask_former_config


ROOT = Path(__file__).resolve().parents[1]


def run_in_triton_interpreter(script: str, timeout: int = 300) -> None:
    """Runs the Python `script` in a subprocess under TRITON_INTERPRET=1 (which must be set
    before Triton compiles anything), with the repository and tests/ importable; asserts that it
    exits 0 with "ok" as its last output."""
    path = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(path))
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                               text=True, timeout=timeout, cwd=ROOT)
    assert completed.returncode == 0 and completed.stdout.strip().endswith("ok"), \
        completed.stdout[-2000:] + completed.stderr[-4000:]


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
            if name in MetadataCatalog:
                MetadataCatalog.remove(name)


@contextlib.contextmanager
def registered_dataset(name: str, dataset_dicts: List[Dict], **metadata):
    """Registers `name` with these dicts and metadata for the duration; removes both after."""
    DatasetCatalog.register(name, lambda: dataset_dicts)
    MetadataCatalog.get(name).set(**metadata)
    try:
        yield name
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def save_png(path, array: np.ndarray) -> str:
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return str(path)


def write_semantic_dataset(root: Path, labels: List[np.ndarray], seed: int = 0) -> List[Dict]:
    """Dataset dicts of images/NNNN.png (random RGB, of each label's size) and labels/NNNN.png."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    dataset_dicts = []
    for index, label in enumerate(labels):
        image = rng.integers(0, 256, (*label.shape[:2], 3), dtype=np.uint8)
        dataset_dicts.append({
            "file_name": save_png(root / "images" / f"{index:04d}.png", image),
            "sem_seg_file_name": save_png(root / "labels" / f"{index:04d}.png", label),
        })
    return dataset_dicts


def truncate(path: str) -> None:
    """Cuts a file to half its length, as an interrupted copy leaves it."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:len(data) // 2])


def load_script(path: Path, name: Optional[str] = None):
    """Imports a script of the repository (tools/, datasets/, demo/: not packages) as module `name`
    (default: its file's stem), with its directory on sys.path first, as `python path` runs it
    (demo/demo.py imports its neighbour predictor.py); imported once."""
    name = name or path.stem
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def doc_block(doc: Path, marker: str, language: str) -> str:
    """The first ```language block after `<!-- marker -->` in the Markdown file `doc`."""
    found = re.search(rf"<!-- {re.escape(marker)} -->\s*```{language}\n(.*?)```", doc.read_text(),
                      re.DOTALL)
    assert found, f"no {language} block after <!-- {marker} --> in {doc}"
    return found.group(1)


def register_first(source: str, count: int) -> str:
    """Registers the first `count` entries of dataset `source`, with its metadata, as
    "{source}_first{count}" (once per process); returns that name. Evaluation in a few seconds."""
    name = f"{source}_first{count}"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get(source)[:count])
        metadata = MetadataCatalog.get(source).as_dict()
        metadata.pop("name")
        MetadataCatalog.get(name).set(**metadata)
    return name
