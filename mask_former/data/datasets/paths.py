"""Where the registered datasets live on disk.

Datasets are registered on import, but their root is read when a dataset is loaded: a later change
of $DETECTRON2_DATASETS (a notebook, a test) is then honoured, and a missing dataset only errors
for the user who asks for it.
"""
import os
from typing import Dict, Iterable

README = "datasets/README.md"


def dataset_root() -> str:
    """$DETECTRON2_DATASETS, or ./datasets when unset (detectron2's own default)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def require_paths(dataset_name: str, paths: Iterable[str]) -> None:
    """Raises FileNotFoundError naming every missing path and where datasets are looked up."""
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        env = os.getenv("DETECTRON2_DATASETS")
        where = f"is {env!r}" if env is not None else "is unset, so './datasets' is used"
        raise FileNotFoundError(
            f"Dataset {dataset_name!r} is not where it is expected: missing "
            + ", ".join(repr(path) for path in missing)
            + f". Datasets are read from $DETECTRON2_DATASETS, which {where}; "
            f"see {README} for the layout and how to prepare it."
        )


def converted_sem_seg_paths(base: str, split_dir: str) -> Dict[str, str]:
    """The images and label maps of a converted split: `base`/images_detectron2/`split_dir` and
    `base`/annotations_detectron2/`split_dir` (the layout of ADE20K-Full and COCO-Stuff-10K)."""
    return dict(
        image_root=os.path.join(base, "images_detectron2", split_dir),
        sem_seg_root=os.path.join(base, "annotations_detectron2", split_dir),
    )
