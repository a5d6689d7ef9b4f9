"""Registers a semantic-segmentation dataset of your own, given by its folder (no Python needed).

    ROOT/classes.txt                     one class name per line; line i (from 0) is label value i
    ROOT/colors.txt                      optional: "R G B" per line, the demo's palette
    ROOT/images/{train,val}/NAME.jpg     (or .jpeg, .png)
    ROOT/labels/{train,val}/NAME.png     uint8 or uint16 class indices; 255 is ignored

The config key DATASETS.CUSTOM_ROOT names ROOT. `load_config` (mask_former/config.py), which
train_net.py, demo/demo.py and tools/check_dataset.py all load their configs through, calls
`apply_custom_root`: it registers `custom_sem_seg_train` and `custom_sem_seg_val` and sets
MODEL.SEM_SEG_HEAD.NUM_CLASSES from classes.txt. classes.txt and colors.txt are read then; the
image and label folders when a split is loaded, so that the demo needs classes.txt only.
"""
import os
from pathlib import Path
from typing import Dict, List, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...errors import ConfigError
from ..dataset_check import Problem
from ..io import DataError, DataFileNotFoundError
from ..metadata_file import MetadataFileError, read_class_names, read_colors

__all__ = [
    "CUSTOM_DATASETS",
    "NUM_CLASSES_FROM_CLASSES_FILE",
    "apply_custom_root",
    "load_custom_split",
    "pair_files",
    "register_custom_dataset",
]

# split -> registered name
CUSTOM_DATASETS = {"train": "custom_sem_seg_train", "val": "custom_sem_seg_val"}
CLASSES_FILE = "classes.txt"
COLORS_FILE = "colors.txt"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LABEL_EXTENSION = ".png"
IGNORE_LABEL = 255
# The MODEL.SEM_SEG_HEAD.NUM_CLASSES of configs/custom/*.yaml. yacs cannot tell a value a config
# file or override gave from a default, so "take the number from classes.txt" is this sentinel,
# which no real config has; any other number is taken as the user's and must match classes.txt.
NUM_CLASSES_FROM_CLASSES_FILE = -1


def pair_files(image_dir: str, label_dir: str) -> Tuple[List[Dict], List[Problem]]:
    """Dataset dicts of the images of `image_dir` with a label map of the same name in
    `label_dir`, sorted by name, and a Problem for every file without its partner (an image
    without a label map, a label map without an image, two images of one name).

    Hidden files and files of other extensions are not dataset files and are left out.
    """
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DataFileNotFoundError(f"{folder} is not a folder: a dataset of "
                                        "DATASETS.CUSTOM_ROOT has images/SPLIT and labels/SPLIT",
                                        path=folder, problem="not a folder")
    images: Dict[str, str] = {}
    problems: List[Problem] = []
    for file in sorted(os.listdir(image_dir)):
        stem, extension = os.path.splitext(file)
        if file.startswith(".") or extension.lower() not in IMAGE_EXTENSIONS:
            continue
        path = os.path.join(image_dir, file)
        if stem in images:
            problems.append(Problem(path, f"image has the NAME of {images[stem]}, and label maps "
                                          "are matched by NAME: rename or remove one"))
            continue
        images[stem] = path
    labels = {}
    for file in sorted(os.listdir(label_dir)):
        stem, extension = os.path.splitext(file)
        if not file.startswith(".") and extension.lower() == LABEL_EXTENSION:
            labels[stem] = os.path.join(label_dir, file)
    for stem, path in images.items():
        if stem not in labels:
            problems.append(Problem(path, f"image has no label map "
                                          f"{os.path.join(label_dir, stem + LABEL_EXTENSION)}"))
    for stem, path in labels.items():
        if stem not in images:
            problems.append(Problem(path, f"label map has no image {stem}.jpg or {stem}.png in "
                                          f"{image_dir}"))
    dataset_dicts = [{"file_name": path, "sem_seg_file_name": labels[stem]}
                     for stem, path in images.items() if stem in labels]
    return dataset_dicts, problems


def load_custom_split(image_dir: str, label_dir: str) -> List[Dict]:
    """The dataset dicts of one split; raises DataError, naming the first file without its
    partner and how many more there are, unless every image has its label map and vice versa."""
    dataset_dicts, problems = pair_files(image_dir, label_dir)
    if problems:  # the first is quoted: the error is one line; check_dataset.py lists them all
        more = (f" ({len(problems) - 1} more unpaired files; tools/check_dataset.py lists them)"
                if len(problems) > 1 else "")
        raise DataError(f"{problems[0]}{more}", path=problems[0].path, problem=problems[0].problem)
    if not dataset_dicts:
        raise DataError(f"{image_dir} has no images ({', '.join(IMAGE_EXTENSIONS)}) with label "
                        f"maps in {label_dir}", path=image_dir, problem="no images")
    return dataset_dicts


def _read_classes_and_colors(root: Path) -> Tuple[List[str], List[Tuple[int, int, int]]]:
    classes_file = root / CLASSES_FILE
    if not classes_file.is_file():
        raise MetadataFileError(f"{classes_file} not found: DATASETS.CUSTOM_ROOT {root} needs a "
                                f"{CLASSES_FILE} with one class name per line (line i names label "
                                "value i)")
    classes = read_class_names(classes_file)
    if len(classes) > IGNORE_LABEL:
        raise MetadataFileError(f"{classes_file} lists {len(classes)} classes, more than the "
                                f"{IGNORE_LABEL} label values below the ignore label {IGNORE_LABEL}")
    colors_file = root / COLORS_FILE
    colors = read_colors(colors_file, len(classes), classes_file) if colors_file.exists() else []
    return classes, colors


def register_custom_dataset(root: str) -> List[str]:
    """Registers `custom_sem_seg_{train,val}` of the dataset folder `root` (replacing an earlier
    registration, of this folder or another); returns its class names.

    Raises ConfigError where `root` is not a folder, MetadataFileError (naming the file and line)
    for a classes.txt or colors.txt that cannot be used.
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"DATASETS.CUSTOM_ROOT {root} {state}: it names a dataset folder with "
                          f"{CLASSES_FILE}, images/ and labels/")
    folder = folder.resolve()  # data loader workers and later loads need not share the cwd
    classes, colors = _read_classes_and_colors(folder)
    for split, name in CUSTOM_DATASETS.items():
        image_dir, label_dir = str(folder / "images" / split), str(folder / "labels" / split)
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        if name in MetadataCatalog:  # with the old folder's classes and paths
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda image_dir=image_dir, label_dir=label_dir:
                                load_custom_split(image_dir, label_dir))
        metadata = dict(stuff_classes=classes, ignore_label=IGNORE_LABEL, evaluator_type="sem_seg",
                        image_root=image_dir, sem_seg_root=label_dir)
        if colors:  # without colors.txt the demo falls back to detectron2's palette
            metadata["stuff_colors"] = [list(color) for color in colors]
        MetadataCatalog.get(name).set(**metadata)
    return classes


def apply_custom_root(cfg) -> None:
    """Registers the dataset of cfg.DATASETS.CUSTOM_ROOT, if set, and sets
    MODEL.SEM_SEG_HEAD.NUM_CLASSES from its classes.txt where it is
    NUM_CLASSES_FROM_CLASSES_FILE (the configs/custom/ value); `cfg` must not be frozen.

    Raises ConfigError where NUM_CLASSES is another number than classes.txt has (naming both
    numbers and the file), and where CUSTOM_ROOT is empty but the config relies on it (the
    sentinel NUM_CLASSES, or a custom_sem_seg_* name in DATASETS.TRAIN / DATASETS.TEST).
    """
    root = cfg.DATASETS.CUSTOM_ROOT
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if not root:
        named = [f"DATASETS.{key} names {name}" for key in ("TRAIN", "TEST")
                 for name in cfg.DATASETS[key] if name in CUSTOM_DATASETS.values()]
        if num_classes == NUM_CLASSES_FROM_CLASSES_FILE:
            named.insert(0, f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} (take it from "
                            f"ROOT/{CLASSES_FILE})")
        if named:
            raise ConfigError(f"DATASETS.CUSTOM_ROOT is empty but {named[0]}; pass "
                              "DATASETS.CUSTOM_ROOT ROOT, your dataset folder")
        return
    classes = register_custom_dataset(root)
    if num_classes == NUM_CLASSES_FROM_CLASSES_FILE:
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(classes)
    elif num_classes != len(classes):
        classes_file = Path(root).expanduser().resolve() / CLASSES_FILE
        raise ConfigError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but {classes_file} "
                          f"lists {len(classes)} classes; set NUM_CLASSES to "
                          f"{NUM_CLASSES_FROM_CLASSES_FILE} (take it from {CLASSES_FILE}) or "
                          f"to {len(classes)}")
