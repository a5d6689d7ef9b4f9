#!/usr/bin/env python
"""Converts ADE20K-Full (ADE20K_2021_17_01) for `ade20k_full_sem_seg_{train,val}`: 847 classes.

Reads, under ADE20K_2021_17_01/:
    images/ADE/{training,validation}/**/NAME.jpg      the images, in folders by scene
    images/ADE/{training,validation}/**/NAME_seg.png  object class of a pixel: R / 10 * 256 + G
and writes there:
    images_detectron2/{training,validation}/NAME.jpg       shorter side at most 512
    annotations_detectron2/{training,validation}/NAME.tif  uint16: the class index 0..846,
                                                           65535 elsewhere

    python datasets/prepare_ade20k_full.py            # root: $DETECTRON2_DATASETS, else ./datasets

As the official MaskFormer's datasets/prepare_ade20k_full_sem_seg.py does (so that results compare):
the classes are ADE20K_FULL_CATEGORIES, and an image whose shorter side exceeds 512 is resized to
512 (bilinear; its label map nearest-neighbour). Images not resized are copied as they are.
"""
import functools
import os
import sys
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from mask_former.data.datasets.ade20k_full_categories import ADE20K_FULL_CATEGORIES
from mask_former.data.datasets.preparation import (
    BadInputError,
    MissingInputError,
    copy_file,
    counts,
    map_with_progress,
    needs_writing,
    require_inputs,
    run_preparation,
    save_image,
)
from mask_former.data.datasets.register_ade20k_full import (
    ADE20K_FULL_DIR,
    ADE20K_FULL_IGNORE_LABEL,
    ADE20K_FULL_SPLITS,
    ade20k_full_paths,
)

MAX_SIZE = 512  # of the shorter side
JPEG_QUALITY = 95  # of the resized images (PIL would use 75)

# Object id (R / 10 * 256 + G, so below 26 * 256) -> class index, 65535 for the objects left out.
OBJECT_CLASSES = np.full(26 * 256, ADE20K_FULL_IGNORE_LABEL, dtype=np.uint16)
OBJECT_CLASSES[[object_id for object_id, _ in ADE20K_FULL_CATEGORIES]] = np.arange(
    len(ADE20K_FULL_CATEGORIES))


def source_dir(root: str, split: str) -> str:
    return os.path.join(root, ADE20K_FULL_DIR, "images", "ADE", ADE20K_FULL_SPLITS[split])


def find_images(folder: str) -> List[Tuple[str, str]]:
    """(name, path) of every image under `folder`, sorted by name; names must be unique."""
    images = {}
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        for name in files:
            if name.endswith(".jpg"):
                path = os.path.join(directory, name)
                if name in images:
                    raise BadInputError(f"{path} and {images[name]} have the same name")
                images[name] = path
    return sorted(images.items())


def resized_size(height: int, width: int) -> Optional[Tuple[int, int]]:
    """(height, width) for an image whose shorter side exceeds MAX_SIZE, else None."""
    if width >= height > MAX_SIZE:
        return MAX_SIZE, round(width / height * MAX_SIZE)
    if height >= width > MAX_SIZE:
        return round(height / width * MAX_SIZE), MAX_SIZE
    return None


def class_map(segmentation: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 *_seg.png -> (H, W) uint16 class indices (65535: no class)."""
    object_ids = (segmentation[..., 0] // 10).astype(np.int64) * 256 + segmentation[..., 1]
    return OBJECT_CLASSES[object_ids]


def convert_image(item: Tuple[str, str], outputs: Dict[str, str], overwrite: bool) -> bool:
    """Writes one image and its label map unless both exist; returns whether it wrote them."""
    name, image_path = item
    stem = name[:-4]
    image_out = os.path.join(outputs["image_root"], name)
    label_out = os.path.join(outputs["sem_seg_root"], stem + ".tif")
    if not needs_writing([image_out, label_out], overwrite):
        return False
    seg_path = image_path[:-4] + "_seg.png"
    if not os.path.isfile(seg_path):
        raise MissingInputError(f"{seg_path} is missing: every image of ADE20K needs its *_seg.png")
    with Image.open(seg_path) as seg:
        labels = class_map(np.asarray(seg.convert("RGB")))
    with Image.open(image_path) as image:
        if image.size != (labels.shape[1], labels.shape[0]):
            raise BadInputError(f"{seg_path} is {labels.shape[1]}x{labels.shape[0]}, its image "
                                f"{image.width}x{image.height}")
        size = resized_size(image.height, image.width)
        if size is None:
            copy_file(image_path, image_out)
        else:
            pixels = cv2.resize(np.asarray(image.convert("RGB")), size[::-1],
                                interpolation=cv2.INTER_LINEAR)
            save_image(pixels, image_out, quality=JPEG_QUALITY)
            labels = cv2.resize(labels, size[::-1], interpolation=cv2.INTER_NEAREST)
    # Deflate keeps a label map ~20x smaller than PIL's uncompressed default; PIL reads it back.
    save_image(labels, label_out, compression="tiff_adobe_deflate")
    return True


def prepare_split(root: str, split: str, overwrite: bool = False, progress: bool = True,
                  workers: int = 1) -> Dict[str, int]:
    """Converts one split ("train" or "val"); returns its counts."""
    outputs = ade20k_full_paths(root, split)
    images = find_images(source_dir(root, split))
    for folder in outputs.values():
        os.makedirs(folder, exist_ok=True)
    convert = functools.partial(convert_image, outputs=outputs, overwrite=overwrite)
    return counts(map_with_progress(convert, images, workers, f"ade20k_full_{split}", progress))


def prepare_ade20k_full(root: str, overwrite: bool = False, progress: bool = True,
                        workers: int = 1) -> Dict[str, Dict[str, int]]:
    """Converts both splits; returns the counts per split."""
    require_inputs([source_dir(root, split) for split in ADE20K_FULL_SPLITS],
                   f"{ADE20K_FULL_DIR}/images/ADE/{{training,validation}}/ from "
                   f"ADE20K_2021_17_01.zip", root)
    return {split: prepare_split(root, split, overwrite, progress, workers)
            for split in ADE20K_FULL_SPLITS}


def main(argv: Optional[List[str]] = None) -> int:
    return run_preparation(
        "prepare_ade20k_full",
        "Convert ADE20K-Full (ADE20K_2021_17_01/images/ADE) into images_detectron2/ and "
        "annotations_detectron2/ (847 classes, 65535 unlabeled).",
        prepare_ade20k_full, argv,
    )


if __name__ == "__main__":
    sys.exit(main())
