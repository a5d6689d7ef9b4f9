"""What the dataset preparation scripts, datasets/prepare_*.py, have in common.

Each script converts a public dataset's download under --root (default $DETECTRON2_DATASETS, else
./datasets) into the layout that its registration in this package reads (datasets/README.md):

- Resumable: every output file is written under a temporary name and renamed once complete, and a
  run skips the outputs that exist (--overwrite redoes them), so a killed run is simply started
  again. A split's json, where there is one, is written last, the same way.
- Per-file work runs on a process pool (--workers, default: every CPU this process may use) behind
  a tqdm bar; a summary line per split follows.
- A missing input, or a file that is not what the dataset's layout says, raises a
  `PreparationError` naming the path; the script prints it as one line and exits with status 1.
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from ...errors import UserError
from .paths import README, dataset_root

T = TypeVar("T")
R = TypeVar("R")


class PreparationError(UserError):
    """A dataset's download is not where, or not what, a preparation script expects."""


class MissingInputError(PreparationError, FileNotFoundError):
    """An input folder or file is missing."""


class BadInputError(PreparationError, ValueError):
    """An input file holds something the dataset's format does not allow."""


def require_inputs(paths: Iterable[str], expected: str, root: str) -> None:
    """Raises MissingInputError naming every missing path of `paths` and the layout expected.

    A path is named by its outermost missing folder (a missing dataset folder once, not each of
    its subfolders). Called before anything is written, so that a wrong --root changes nothing.
    """
    missing = []
    for path in paths:
        if os.path.exists(path):
            continue
        parent = os.path.dirname(path)
        while parent and parent != path and not os.path.exists(parent):
            path, parent = parent, os.path.dirname(parent)
        if path not in missing:
            missing.append(path)
    if missing:
        raise MissingInputError(
            "missing " + ", ".join(repr(path) for path in missing)
            + f"; expected {expected} under --root {root!r} (default $DETECTRON2_DATASETS, "
            f"else ./datasets; see {README})"
        )


def default_workers() -> int:
    """The CPUs this process may run on (a container or `taskset` may allow fewer than exist)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def argument_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the flags every preparation script has: --root, --overwrite, --workers,
    --no-progress."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--root", default=dataset_root(),
        help="the datasets folder (default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="convert again the files that already exist")
    parser.add_argument("--workers", type=int, default=default_workers(), metavar="N",
                        help="processes converting files in parallel (default: %(default)s, the "
                        "CPUs available; 1 converts in this process)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_preparation(
    prog: str, description: str, prepare: Callable[..., Dict[str, Dict[str, int]]],
    argv: Optional[List[str]] = None,
) -> int:
    """A preparation script's main: parses the flags, runs
    `prepare(root, overwrite, progress, workers)`, prints its per-split counts as summary lines, and
    returns the exit status: 1, with the error as one line instead of a traceback, on a user error.
    """
    args = argument_parser(description).parse_args(argv)
    try:
        results = prepare(args.root, args.overwrite, not args.no_progress, args.workers)
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the files written so far are complete and kept: run the same "
              f"command again to go on from there", file=sys.stderr)
        return 130
    for split, split_counts in results.items():
        print(summary(split, split_counts))
    return 0


def needs_writing(outputs: Sequence[str], overwrite: bool) -> bool:
    """Whether an item's outputs are to be (re)written: with --overwrite, or if any is missing."""
    return overwrite or not all(os.path.exists(path) for path in outputs)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it to `path` when the block completes.

    A run killed mid-write leaves at most the hidden temporary file, never a truncated `path` that
    a later run would skip as done; the temporary name ends in ".tmp", so that the registrations'
    file listings (by extension) never pick it up.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # only when the block raised
            os.remove(tmp)


def save_image(array: np.ndarray, path: str, **params) -> None:
    """Writes an array as an image, atomically; the format follows `path`'s extension."""
    image_format = Image.registered_extensions()[os.path.splitext(path)[1].lower()]
    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp, format=image_format, **params)


def copy_file(src: str, dst: str) -> None:
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_json(data: Dict, path: str) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)


def _ignore_interrupts() -> None:
    """In a pool's worker: Ctrl-C is for the main process, which stops handing out work and lets
    the files being written be finished (rather than every worker printing a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def map_with_progress(
    function: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool = True
) -> List[R]:
    """[function(item) for item in items] on `workers` processes (1: in this one), with a bar.

    `function` must be picklable (a module-level function, or a functools.partial of one). The
    first exception raised by any item cancels the items not started yet and is raised here.
    """
    results = []
    with tqdm(total=len(items), desc=desc, unit="file", disable=not progress) as bar:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                results.append(function(item))
                bar.update()
            return results
        workers = min(workers, len(items))
        # Chunks amortise the inter-process traffic over a few files, small enough for a smooth bar.
        chunksize = max(1, min(16, len(items) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupts) as executor:
            try:
                for result in executor.map(function, items, chunksize=chunksize):
                    results.append(result)
                    bar.update()
            except BaseException:
                executor.shutdown(wait=True, cancel_futures=True)
                raise
    return results


def counts(written: Iterable[bool]) -> Dict[str, int]:
    """{"converted": n, "skipped": m} of per-item flags "was written"."""
    written = list(written)
    return {"converted": sum(written), "skipped": len(written) - sum(written)}


def summary(split: str, split_counts: Dict[str, int]) -> str:
    """"val: 3 converted, 1 skipped (...)", then any further counts: "; 12 segments, 5 instances"."""
    line = (f"{split}: {split_counts['converted']} converted, {split_counts['skipped']} skipped "
            f"(already there; --overwrite to redo)")
    more = [f"{n} {what}" for what, n in split_counts.items() if what not in ("converted", "skipped")]
    return f"{line}; {', '.join(more)}" if more else line
