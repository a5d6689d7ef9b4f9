"""Checks of the datasets a config names, before any training step.

- `check_datasets_registered_and_loadable(cfg)`, the fast pre-flight: every name of DATASETS.TRAIN
  and DATASETS.TEST is registered (else one error with the close names), its dicts load (so that
  a missing val split fails before training, not after it) and its classes agree with
  MODEL.SEM_SEG_HEAD.NUM_CLASSES.
- `scan_dataset(name)`, the full scan: decodes every image and label file of a dataset with the
  checks of the mappers and evaluators (mask_former.data.io) and returns every problem found, a
  `Problem` naming a file and what is wrong with it. tools/check_dataset.py prints them;
  `scan_before_training(cfg)` runs it on train_net's first start and refuses to train on problems.
"""
import difflib
import functools
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from tqdm import tqdm

from ..errors import UserError
from .io import (DataError, entry_error, read_dataset_image, read_panoptic_png,
                 read_semantic_label_map)

__all__ = [
    "DatasetConfigError",
    "DatasetNotRegisteredError",
    "DatasetProblemsError",
    "Problem",
    "check_datasets_registered_and_loadable",
    "check_num_classes",
    "entry_problems",
    "require_registered",
    "scan_before_training",
    "scan_dataset",
]

logger = logging.getLogger(__name__)

# train_net's record of the datasets whose scan passed, in OUTPUT_DIR.
SCAN_RECORD = "dataset_check.json"
# train_net's list of every problem of a failed scan, in OUTPUT_DIR.
PROBLEMS_FILE = "dataset_problems.txt"
# At most this many problems are quoted in the error that refuses to train.
_MAX_QUOTED_PROBLEMS = 20


class DatasetNotRegisteredError(UserError, KeyError):
    """A config or command names a dataset that is not in detectron2's DatasetCatalog."""

    def __str__(self):  # KeyError's own would quote the message
        return str(self.args[0])


class DatasetConfigError(UserError, ValueError):
    """A registered dataset that does not fit the config (empty, other number of classes)."""


class DatasetProblemsError(UserError, ValueError):
    """The full scan found problems in the files of a dataset."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a dataset: `path`, the file at fault, and `problem`, what is wrong."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    @classmethod
    def from_error(cls, error: DataError) -> "Problem":
        return cls(str(error.path), error.problem)


def require_registered(name: str, key: Optional[str] = None) -> None:
    """Raises DatasetNotRegisteredError unless `name` (found in config key `key`, e.g.
    "DATASETS.TRAIN", if given) is registered, listing the registered names closest to it."""
    if name in DatasetCatalog:
        return
    raise DatasetNotRegisteredError(_not_registered(name, key))


def _not_registered(name: str, key: Optional[str]) -> str:
    registered = DatasetCatalog.list()
    close = difflib.get_close_matches(name, registered, n=5, cutoff=0.6)
    hint = (f"close names: {', '.join(close)}" if close else
            f"{len(registered)} names are; tools/check_dataset.py --list prints them")
    subject = f"{key} names dataset {name!r}, which" if key else f"Dataset {name!r}"
    return f"{subject} is not registered ({hint})"


def _configured_names(cfg, train: bool = True, test: bool = True) -> List[Tuple[str, str]]:
    """[(config key, dataset name)] of DATASETS.TRAIN and/or DATASETS.TEST, in config order."""
    keys = (["TRAIN"] if train else []) + (["TEST"] if test else [])
    return [(f"DATASETS.{key}", name) for key in keys for name in cfg.DATASETS[key]]


def check_num_classes(cfg, train: bool = True, test: bool = True) -> None:
    """Fails unless the datasets' classes fit MODEL.SEM_SEG_HEAD.NUM_CLASSES: a training dataset
    may have fewer classes than the model predicts, a test dataset must have as many (the
    evaluators score the predicted class ids as the dataset's).

    The classes are the metadata list the class ids index: for training, the one the mapper
    reads (`classes_key`: `stuff_classes`, every class, for semantic and panoptic mappers,
    `thing_classes` for the instance ones); for testing, `stuff_classes` where the dataset has
    them, else `thing_classes` (instance-only datasets). Datasets without either are not checked.
    """
    from .build import DATASET_MAPPERS  # build imports this module

    mapper = DATASET_MAPPERS.get(cfg.INPUT.DATASET_MAPPER_NAME)
    train_key = getattr(mapper, "classes_key", "stuff_classes")
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for key, name in _configured_names(cfg, train, test):
        metadata = MetadataCatalog.get(name)
        if key == "DATASETS.TRAIN":
            classes_key = train_key
        else:
            classes_key = "stuff_classes" if metadata.get("stuff_classes", None) else "thing_classes"
        classes = metadata.get(classes_key, None)
        if classes is None:
            continue
        if len(classes) > num_classes or (key == "DATASETS.TEST" and len(classes) != num_classes):
            raise DatasetConfigError(
                f"Dataset {name!r} ({key}) has {len(classes)} classes ({classes_key}) but "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes}; set it to {len(classes)}."
            )


def check_datasets_registered_and_loadable(cfg, train: bool = True) -> Dict[str, int]:
    """The pre-flight of a run: the datasets of DATASETS.TEST, and of DATASETS.TRAIN unless
    `train` is False, are registered, load and have entries, and their classes fit the model.

    Returns {dataset name: number of entries}. Loading reads only annotation lists (json files,
    directory listings), not the images; `scan_dataset` decodes those.
    """
    names = _configured_names(cfg, train=train)
    unregistered = [_not_registered(name, key) for key, name in names if name not in DatasetCatalog]
    if unregistered:
        raise DatasetNotRegisteredError("; ".join(unregistered))
    sizes = {}
    for key, name in names:
        if name in sizes:
            continue
        try:
            dataset_dicts = DatasetCatalog.get(name)
        except FileNotFoundError as error:
            raise DatasetConfigError(f"{key} dataset {name!r} cannot be loaded: {error}") from error
        if not dataset_dicts:
            raise DatasetConfigError(f"{key} dataset {name!r} has no entries")
        sizes[name] = len(dataset_dicts)
    # after loading: some registrations complete their metadata only then
    check_num_classes(cfg, train=train)
    return sizes


def _attempt(problems: List[Problem], read: Callable, *args):
    """read(*args), or None with its DataError added to `problems`."""
    try:
        return read(*args)
    except DataError as error:
        problems.append(Problem.from_error(error))
        return None


def entry_problems(dataset_dict: Dict, num_classes: Optional[int],
                   ignore_label: Optional[int]) -> List[Problem]:
    """Every problem of one dataset entry: its image, and each label file it names (semantic
    label map, panoptic PNG with segments_info), with the checks of the mappers. A label whose
    image cannot be read is still checked, against the entry's "height"/"width" if it has them."""
    dataset_dict = dict(dataset_dict)  # read_dataset_image sets "height"/"width"
    problems: List[Problem] = []
    image = _attempt(problems, read_dataset_image, dataset_dict, "RGB")
    image_size = image.shape[:2] if image is not None else None
    if image_size is None and "height" in dataset_dict and "width" in dataset_dict:
        image_size = (dataset_dict["height"], dataset_dict["width"])
    if "sem_seg_file_name" in dataset_dict:
        _attempt(problems, read_semantic_label_map, dataset_dict["sem_seg_file_name"], dataset_dict,
                 image_size, num_classes, ignore_label)
    if "pan_seg_file_name" in dataset_dict or "segments_info" in dataset_dict:
        _attempt(problems, read_panoptic_png, dataset_dict, image_size, num_classes)
    if not {"sem_seg_file_name", "pan_seg_file_name", "segments_info"} & dataset_dict.keys():
        problems.append(Problem.from_error(entry_error(
            dataset_dict, "has neither 'sem_seg_file_name' nor 'pan_seg_file_name'")))
    return problems


def scan_dataset(name: str, workers: Optional[int] = None, progress: bool = True,
                 shard: Tuple[int, int] = (0, 1),
                 dataset_dicts: Optional[Sequence[Dict]] = None) -> List[Problem]:
    """Decodes every image and label file of a registered dataset; returns every problem found.

    Values of semantic label maps and category ids of panoptic segments are checked against the
    dataset's stuff_classes and ignore_label (where its metadata has them).

    Args:
        name: a registered dataset.
        workers: processes to decode in; None: os.cpu_count(); 0 or 1: this process.
        progress: show a tqdm progress bar.
        shard: (index, count): scan only the entries index, index + count, ... (a distributed
            worker's share).
        dataset_dicts: the dataset's dicts, where the caller has loaded them already.
    """
    require_registered(name)
    if dataset_dicts is None:
        dataset_dicts = DatasetCatalog.get(name)
    metadata = MetadataCatalog.get(name)  # after loading: some registrations complete it then
    classes = metadata.get("stuff_classes", None)
    check = functools.partial(entry_problems,
                              num_classes=len(classes) if classes is not None else None,
                              ignore_label=metadata.get("ignore_label", None))
    index, count = shard
    entries = dataset_dicts[index::count]
    if workers is None:
        workers = os.cpu_count() or 1
    problems: List[Problem] = []
    with tqdm(total=len(entries), desc=f"checking {name}", unit="entries", disable=not progress,
              dynamic_ncols=True) as bar:
        for found in _map(check, entries, min(workers, len(entries))):
            problems.extend(found)
            bar.update()
    return problems


def _map(function: Callable, items: Sequence, workers: int) -> Iterator:
    """function(item) for each item, in order, computed in `workers` processes (<= 1: here)."""
    if workers <= 1:
        yield from map(function, items)
        return
    # small chunks: the progress bar moves, and one slow file does not hold back a large share
    chunksize = max(1, min(32, len(items) // (8 * workers)))
    with multiprocessing.get_context().Pool(workers) as pool:
        yield from pool.imap(function, items, chunksize=chunksize)


def _read_record(path: str) -> List[str]:
    """The dataset names whose scan the record at `path` says passed; [] without one."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(json.load(f)["passed"])


def _write_atomically(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file: a killed run leaves no half file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def scan_before_training(cfg, workers: Optional[int] = None) -> None:
    """train_net's first-start check: `scan_dataset` of every dataset of DATASETS.TRAIN and
    DATASETS.TEST, except those that OUTPUT_DIR/dataset_check.json says passed already.

    Raises DatasetProblemsError quoting the problems (all of them go to
    OUTPUT_DIR/dataset_problems.txt) if any is found. Records the datasets that passed.
    Distributed: every worker scans its share of the entries and all of them raise alike; call it
    from all workers.

    Args:
        workers: decoding processes per worker; None: DATALOADER.NUM_WORKERS, or os.cpu_count()
            where that is 0.
    """
    record_path = os.path.join(cfg.OUTPUT_DIR, SCAN_RECORD)
    passed = _read_record(record_path)
    names = [name for _, name in _configured_names(cfg) if name not in passed]
    names = list(dict.fromkeys(names))  # a dataset in both lists is scanned once
    if not names:
        return
    if workers is None:
        workers = cfg.DATALOADER.NUM_WORKERS or os.cpu_count()
    problems = {}
    for name in names:
        start = time.perf_counter()
        mine = scan_dataset(name, workers, progress=comm.is_main_process(),
                            shard=(comm.get_rank(), comm.get_world_size()))
        found = [problem for part in comm.all_gather(mine) for problem in part]
        logger.info(f"Checked every file of {name} in {time.perf_counter() - start:.1f} s: "
                    f"{len(found)} problems")
        if found:
            problems[name] = found
        else:
            passed.append(name)
    if comm.is_main_process():
        _write_atomically(record_path, json.dumps({"passed": passed}, indent=1) + "\n")
    if problems:
        raise _problems_error(problems, os.path.join(cfg.OUTPUT_DIR, PROBLEMS_FILE))


def _problems_error(problems: Dict[str, Sequence[Problem]],
                    problems_path: str) -> DatasetProblemsError:
    """The error refusing to train; writes every problem to `problems_path` (main worker)."""
    lines = [str(problem) for found in problems.values() for problem in found]
    if comm.is_main_process():
        _write_atomically(problems_path, "\n".join(lines) + "\n")
    counts = ", ".join(f"{len(found)} in {name}" for name, found in problems.items())
    quoted = lines[:_MAX_QUOTED_PROBLEMS]
    if len(lines) > len(quoted):
        quoted.append(f"... and {len(lines) - len(quoted)} more")
    return DatasetProblemsError(
        f"Not training: the dataset check found {len(lines)} problems ({counts}); all of them are "
        f"listed in {problems_path}:\n" + "\n".join(quoted) + "\n"
        "Fix them (tools/check_dataset.py NAME checks a dataset again), or pass "
        "--skip-dataset-check to train anyway."
    )
