"""Reading and checking the files of dataset entries: images, semantic label maps, panoptic PNGs.

The training mappers, the inference mapper, the evaluators and the dataset scan
(`dataset_check.scan_dataset`) all read through this module, so that a file is accepted or refused,
in the same words, wherever it is read. Every error names the file and the image of its dataset
entry, since a data loader worker otherwise reports only a decoder's message ("image file is
truncated") with no way to find the bad sample among thousands.
"""
import struct
import zlib
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import detection_utils as utils
from PIL import Image

from ..errors import UserError

__all__ = [
    "DataError",
    "DataFileNotFoundError",
    "describe_entry",
    "entry_error",
    "file_error",
    "pad_to_multiple",
    "read_dataset_image",
    "read_file",
    "read_panoptic_png",
    "read_semantic_label_map",
    "rgb_to_id",
]

# At most this many offending label values are listed in an error message.
_MAX_LISTED_VALUES = 10
# What PIL raises for a corrupt or truncated file: its decoders report through all of these
# (OSError "image file is truncated", SyntaxError "broken PNG file", zlib.error, ...).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError)


class DataError(UserError, ValueError):
    """A file of a dataset entry (or the entry itself) that cannot be used as it is.

    The message is a sentence naming the file and the image of its entry. `path` is the file at
    fault and `problem` what is wrong with it, without the path, so that a scan can list problems
    one a line as "path: problem". Both are optional only so that the exception can be rebuilt
    from its message alone (as PyTorch's data loader does with a worker's error).
    """

    def __init__(self, message: str, path: Optional[str] = None, problem: Optional[str] = None):
        super().__init__(message)
        self.path = path
        self.problem = problem if problem is not None else message


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A file that a dataset entry names does not exist."""


def describe_entry(dataset_dict: Dict) -> str:
    """The phrase "dataset entry of image PATH", for error messages."""
    return f"dataset entry of image {dataset_dict.get('file_name')!r}"


def _located(path: str, dataset_dict: Dict) -> str:
    """`path`, with the image of its dataset entry unless it is that image."""
    if path == dataset_dict.get("file_name"):
        return repr(path)
    return f"{path!r} ({describe_entry(dataset_dict)})"


def file_error(what: str, path: str, dataset_dict: Dict, problem: str,
                error_type=DataError) -> DataError:
    """The error "WHAT PATH (dataset entry of image IMAGE) PROBLEM", e.g. problem="not found"."""
    return error_type(f"{what} {_located(path, dataset_dict)} {problem}", path=path,
                      problem=f"{what} {problem}")


def entry_error(dataset_dict: Dict, problem: str) -> DataError:
    """An error about a dataset entry itself, e.g. problem="has no 'sem_seg_file_name'"."""
    return DataError(f"{describe_entry(dataset_dict)} {problem}",
                     path=str(dataset_dict.get("file_name", "<dataset entry without file_name>")),
                     problem=f"dataset entry {problem}")


def read_file(path: str, dataset_dict: Dict, what: str,
              image_format: Optional[str] = None) -> np.ndarray:
    """Reads an image file with detectron2's reader (EXIF orientation applied).

    Returns (H, W, C) or (H, W), as `detection_utils.read_image`. A missing file raises
    DataFileNotFoundError, an unreadable one DataError; both name `path` (a `what`) and the image
    of `dataset_dict`.
    """
    try:
        return utils.read_image(path, format=image_format)
    except FileNotFoundError as e:
        raise file_error(what, path, dataset_dict, "not found", DataFileNotFoundError) from e
    except _DECODE_ERRORS as e:
        detail = f"{type(e).__name__}: {e}"
        raise DataError(f"cannot read {what} {_located(path, dataset_dict)}: {detail}", path=path,
                        problem=f"cannot read {what}: {detail}") from e


def _size(array_or_size) -> str:
    height, width = array_or_size[:2]
    return f"{width}x{height}"


def read_dataset_image(dataset_dict: Dict, image_format: str) -> np.ndarray:
    """The image of a dataset entry, (H, W, 3) uint8 in `image_format`.

    Checks it against the entry's "height"/"width" and sets those where the entry lacks them (the
    model resizes its outputs to them), as detectron2's `check_image_size`.
    """
    if "file_name" not in dataset_dict:
        raise entry_error(dataset_dict, f"has no 'file_name': {dataset_dict}")
    path = dataset_dict["file_name"]
    image = read_file(path, dataset_dict, "image file", image_format)
    height, width = image.shape[:2]
    expected = (dataset_dict.get("height", height), dataset_dict.get("width", width))
    if tuple(image.shape[:2]) != expected:
        raise file_error("image file", path, dataset_dict,
                          f"is {_size(image.shape)} (WxH) but its dataset entry says "
                          f"{_size(expected)}")
    dataset_dict["height"], dataset_dict["width"] = expected
    return image


def _check_size(label: np.ndarray, path: str, dataset_dict: Dict, what: str,
                image_size: Optional[Sequence[int]]) -> None:
    """Raises DataError naming both files unless `label` (H, W, ...) has `image_size` (H, W)."""
    if image_size is None or tuple(label.shape[:2]) == tuple(image_size):
        return
    problem = (f"is {_size(label.shape)} (WxH) but its image {dataset_dict['file_name']!r} is "
               f"{_size(image_size)}")
    raise DataError(f"{what} {path!r} {problem}", path=path, problem=f"{what} {problem}")


def _listed(values: Sequence[int]) -> str:
    values = [int(v) for v in values]
    extra = len(values) - _MAX_LISTED_VALUES
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED_VALUES])
    return f"[{shown}{f', ... ({extra} more)' if extra > 0 else ''}]"


def _distinct_values(label: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array."""
    if label.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(label.ravel()))  # 5x faster than np.unique here
    return np.unique(label)


def read_semantic_label_map(path: str, dataset_dict: Dict, image_size: Optional[Sequence[int]],
                            num_classes: Optional[int], ignore_label: Optional[int]) -> np.ndarray:
    """Reads and checks a label map of class ids; returns it as stored, (H, W) integer.

    It must be single-channel, of `image_size` (H, W; the size of the entry's image, or of the
    prediction it is scored against; None skips that check), and its values must lie in
    [0, num_classes) or equal `ignore_label` (`num_classes=None` skips that check).
    """
    what = "semantic label map"
    label = read_file(path, dataset_dict, what)
    if label.ndim != 2 or label.dtype.kind not in "ui":
        raise file_error(what, path, dataset_dict, f"is not a single-channel integer image: "
                          f"shape {label.shape}, dtype {label.dtype}")
    _check_size(label, path, dataset_dict, what, image_size)
    if num_classes is not None:
        values = _distinct_values(label)
        bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
        if bad.size:
            raise file_error(what, path, dataset_dict,
                              f"has values {_listed(bad)} outside the class ids [0, {num_classes}) "
                              f"that are not the ignore label {ignore_label}")
    return label


def read_panoptic_png(dataset_dict: Dict, image_size: Optional[Sequence[int]],
                      num_classes: Optional[int]) -> np.ndarray:
    """Reads the entry's "pan_seg_file_name" (RGB-encoded segment ids) and checks it against
    `image_size` (H, W; None skips that) and the categories of its "segments_info" (contiguous ids
    in [0, num_classes); None skips that).

    Returns (H, W, 3) uint8; `rgb_to_id` decodes it after the geometric transforms, which would
    lose large ids if applied to them as floats.
    """
    what = "panoptic PNG"
    if "pan_seg_file_name" not in dataset_dict:
        raise entry_error(dataset_dict, "has no 'pan_seg_file_name'")
    path = dataset_dict["pan_seg_file_name"]
    if "segments_info" not in dataset_dict:
        raise file_error(what, path, dataset_dict, "has no 'segments_info' in its dataset entry")
    pan_seg = read_file(path, dataset_dict, what, "RGB")
    _check_size(pan_seg, path, dataset_dict, what, image_size)
    if num_classes is not None:
        categories = sorted({s["category_id"] for s in dataset_dict["segments_info"]})
        bad = [c for c in categories if not 0 <= c < num_classes]
        if bad:
            raise file_error(what, path, dataset_dict,
                              f"has segments_info category ids {_listed(bad)} outside the "
                              f"contiguous class ids [0, {num_classes})")
    return pan_seg


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 COCO panoptic encoding -> (H, W) int64 ids, id = R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) int segment ids -> (H, W, 3) uint8 COCO panoptic encoding; `rgb_to_id`'s inverse."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def pad_to_multiple(tensor: torch.Tensor, divisibility: int, value: float) -> torch.Tensor:
    """Pads the last two dims (H, W) at the bottom and right up to multiples of `divisibility`."""
    height, width = tensor.shape[-2:]
    pad_h, pad_w = -height % divisibility, -width % divisibility
    if pad_h == 0 and pad_w == 0:
        return tensor
    return F.pad(tensor, [0, pad_w, 0, pad_h], value=value).contiguous()

