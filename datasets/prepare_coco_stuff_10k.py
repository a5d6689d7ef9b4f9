#!/usr/bin/env python
"""Converts COCO-Stuff-10K v1.1 for `coco_2017_{train,test}_stuff_10k_sem_seg`: 171 classes.

Reads, under coco/coco_stuff_10k/ (cocostuff-10k-v1.1.zip, unzipped):
    imageLists/{train,test}.txt    the image names of each split, one a line
    images/NAME.jpg
    annotations/NAME.mat           S: the label map, 0 unlabeled, else the COCO-Stuff category id
                                   (things 1..90, stuff 92..182)
and writes there:
    images_detectron2/{train,test}/NAME.jpg        the images, copied
    annotations_detectron2/{train,test}/NAME.png   uint8: the class index 0..170, 255 unlabeled

    python datasets/prepare_coco_stuff_10k.py         # root: $DETECTRON2_DATASETS, else ./datasets

The class indices are those of the registration's `stuff_dataset_id_to_contiguous_id`.
"""
import functools
import os
import sys
from typing import Dict, List, Optional

import numpy as np
import scipy.io
from PIL import Image

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
from mask_former.data.datasets.register_coco_stuff_10k import (
    COCO_STUFF_10K_DIR,
    COCO_STUFF_10K_IGNORE_LABEL,
    COCO_STUFF_10K_SPLITS,
    coco_stuff_10k_paths,
    coco_stuff_metadata,
)

# COCO-Stuff category id -> class index; 0 (unlabeled) -> the ignore label.
CATEGORY_CLASSES = {0: COCO_STUFF_10K_IGNORE_LABEL,
                    **coco_stuff_metadata()["stuff_dataset_id_to_contiguous_id"]}
# The same as a lookup table over 0..182, the largest id.
CATEGORY_CLASS_TABLE = np.zeros(max(CATEGORY_CLASSES) + 1, dtype=np.uint8)
CATEGORY_CLASS_TABLE[list(CATEGORY_CLASSES)] = list(CATEGORY_CLASSES.values())


def input_paths(root: str) -> Dict[str, str]:
    base = os.path.join(root, COCO_STUFF_10K_DIR)
    paths = {split: os.path.join(base, "imageLists", f"{split}.txt")
             for split in COCO_STUFF_10K_SPLITS}
    paths.update(images=os.path.join(base, "images"), annotations=os.path.join(base, "annotations"))
    return paths


def read_label_map(path: str) -> np.ndarray:
    """The `S` of a v1.1 annotation file, as (H, W) uint8 class indices (255: unlabeled)."""
    try:
        labels = scipy.io.loadmat(path, variable_names=["S"]).get("S")
    except NotImplementedError:  # scipy's answer to a MATLAB v7.3 (HDF5) file
        raise BadInputError(
            f"{path} is a MATLAB v7.3 file, as COCO-Stuff-10K v1.0 has; this script reads v1.1 "
            f"(cocostuff-10k-v1.1.zip)") from None
    except scipy.io.matlab.MatReadError as error:
        raise BadInputError(f"{path}: not a MATLAB file ({error})") from None
    if labels is None or labels.ndim != 2:
        raise BadInputError(f"{path} holds no 2-D label map S")
    unknown = sorted(set(np.unique(labels).tolist()) - set(CATEGORY_CLASSES))
    if unknown:
        # The 11 COCO thing ids that have no annotations (12, 26, ...) are not classes either.
        raise BadInputError(f"{path}: {unknown[0]} in S is not a COCO-Stuff category id")
    return CATEGORY_CLASS_TABLE[labels.astype(np.int64)]


def convert_image(name: str, inputs: Dict[str, str], outputs: Dict[str, str],
                  overwrite: bool) -> bool:
    """Writes one image and its label map unless both exist; returns whether it wrote them."""
    image_out = os.path.join(outputs["image_root"], name + ".jpg")
    label_out = os.path.join(outputs["sem_seg_root"], name + ".png")
    if not needs_writing([image_out, label_out], overwrite):
        return False
    image_path = os.path.join(inputs["images"], name + ".jpg")
    mat_path = os.path.join(inputs["annotations"], name + ".mat")
    for path in (image_path, mat_path):
        if not os.path.isfile(path):
            raise MissingInputError(f"{path} is missing; the image lists name {name}")
    labels = read_label_map(mat_path)
    with Image.open(image_path) as image:
        if image.size != (labels.shape[1], labels.shape[0]):
            raise BadInputError(f"{mat_path}: S is {labels.shape[1]}x{labels.shape[0]}, its image "
                                f"{image.width}x{image.height}")
    copy_file(image_path, image_out)
    save_image(labels, label_out)
    return True


def read_image_list(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def prepare_coco_stuff_10k(root: str, overwrite: bool = False, progress: bool = True,
                           workers: int = 1) -> Dict[str, Dict[str, int]]:
    """Converts both splits; returns the counts per split."""
    inputs = input_paths(root)
    require_inputs(inputs.values(),
                   f"{COCO_STUFF_10K_DIR}/{{imageLists,images,annotations}}/ from "
                   f"cocostuff-10k-v1.1.zip", root)
    results = {}
    for split in COCO_STUFF_10K_SPLITS:
        outputs = coco_stuff_10k_paths(root, split)
        for folder in outputs.values():
            os.makedirs(folder, exist_ok=True)
        convert = functools.partial(convert_image, inputs=inputs, outputs=outputs,
                                    overwrite=overwrite)
        names = read_image_list(inputs[split])
        results[split] = counts(
            map_with_progress(convert, names, workers, f"coco_stuff_10k_{split}", progress))
    return results


def main(argv: Optional[List[str]] = None) -> int:
    return run_preparation(
        "prepare_coco_stuff_10k",
        "Convert COCO-Stuff-10K v1.1 (coco/coco_stuff_10k: images, annotations/*.mat, "
        "imageLists) into images_detectron2/ and annotations_detectron2/ (171 classes, 255 "
        "unlabeled).",
        prepare_coco_stuff_10k, argv,
    )


if __name__ == "__main__":
    sys.exit(main())
