#!/usr/bin/env python
"""Writes ADE20K-150 panoptic and instance annotations from the scene-parsing and instance releases.

Reads, under ADEChallengeData2016/:
    images/{training,validation}/*.jpg
    annotations/{training,validation}/*.png            semantic: 0 unlabeled, 1..150 the classes
    annotations_instance/{training,validation}/*.png   R: instance category 1..100 (0: none),
                                                       G: instance id (0: none)
and writes there:
    ade20k_panoptic_{train,val}/*.png    COCO panoptic PNGs, segment id = R + 256 G + 256^2 B
    ade20k_panoptic_{train,val}.json     images, annotations (segments_info with area, bbox,
                                         iscrowd) and the 150 categories (with isthing, color)
    ade20k_instance_{train,val}.json     COCO instances of the 100 thing classes, RLE masks (what
                                         Mask2Former's `ade20k_instance_*` datasets read)

    python datasets/prepare_ade20k_panoptic.py        # root: $DETECTRON2_DATASETS, else ./datasets
    python datasets/prepare_ade20k.py                 # ade20k_panoptic_* reads its output too

The things are the 100 classes that the instance categories map to (mask_former.data.datasets.
ade20k_categories); the other 50 are stuff. A panoptic map holds one segment per stuff class of the
semantic map, then every instance pasted over them; pixels of a thing class outside all instances,
and unlabeled ones, are void (0).

Segment ids are (class index + 1) * 1000 + n, with n = 0 for a stuff segment and n = 1, 2, ... for
the instances of a class in instance-id order. A PNG so describes itself: segments_info and the
instance annotations are computed from the written id map, which is how a resumed run gets those of
the images whose PNG it skips.
"""
import functools
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from scipy import ndimage

from mask_former.data.io import id_to_rgb, rgb_to_id
from mask_former.data.datasets.ade20k_categories import (
    ADE20K_INSTANCE_CATEGORIES,
    ADE20K_THING_CLASSES,
    ade20k_instance_categories,
    ade20k_panoptic_categories,
)
from mask_former.data.datasets.preparation import (
    BadInputError,
    MissingInputError,
    counts,
    map_with_progress,
    needs_writing,
    require_inputs,
    run_preparation,
    save_image,
    write_json,
)
from mask_former.data.datasets.register_ade20k_panoptic import (
    ADE20K_DIR,
    ADE20K_PANOPTIC_SPLITS,
    ade20k_panoptic_paths,
)

NUM_CLASSES = 150
SEGMENT_ID_DIVISOR = 1000  # a segment id is (class index + 1) * 1000 + instance number

# Semantic label (0 unlabeled, class index + 1) -> segment id of its stuff segment; 0 for things,
# which come from the instance map only.
STUFF_SEGMENT_IDS = np.array(
    [0] + [0 if c in ADE20K_THING_CLASSES else (c + 1) * SEGMENT_ID_DIVISOR
           for c in range(NUM_CLASSES)], dtype=np.int64)
# Instance category (R, 1..100) -> class index; entry 0 (no category) is never used.
INSTANCE_CATEGORY_CLASSES = np.array(
    [-1] + [class_index for _, class_index in ADE20K_INSTANCE_CATEGORIES], dtype=np.int64)


def input_paths(root: str, split: str) -> Dict[str, str]:
    """The release's folders that one split is made from."""
    base = os.path.join(root, ADE20K_DIR)
    dirname = ADE20K_PANOPTIC_SPLITS[split]
    return dict(
        images=os.path.join(base, "images", dirname),
        semantic=os.path.join(base, "annotations", dirname),
        instance=os.path.join(base, "annotations_instance", dirname),
    )


def instance_json_path(root: str, split: str) -> str:
    return os.path.join(root, ADE20K_DIR, f"ade20k_instance_{split}.json")


def panoptic_segment_ids(semantic: np.ndarray, instance: np.ndarray, source: str) -> np.ndarray:
    """(H, W) uint8 semantic labels and (H, W, 3) uint8 instance map -> (H, W) int64 segment ids.

    `source` names the instance file in errors.
    """
    ids = STUFF_SEGMENT_IDS[semantic]
    category, instance_id = instance[..., 0].astype(np.int64), instance[..., 1].astype(np.int64)
    labelled = instance_id > 0
    # One (instance id, category) pair per instance, in instance-id order.
    pairs = np.unique(instance_id[labelled] * 256 + category[labelled])
    instance_ids, categories = pairs // 256, pairs % 256
    if len(np.unique(instance_ids)) != len(instance_ids):
        mixed = instance_ids[np.flatnonzero(np.diff(instance_ids) == 0)[0]]
        raise BadInputError(f"{source}: instance {mixed} (G) has pixels of several categories (R)")
    bad = categories[(categories < 1) | (categories > len(ADE20K_INSTANCE_CATEGORIES))]
    if len(bad):
        raise BadInputError(f"{source}: an instance has category (R) {bad[0]}, expected 1.."
                            f"{len(ADE20K_INSTANCE_CATEGORIES)}")
    classes = INSTANCE_CATEGORY_CLASSES[categories]
    numbers = np.zeros(len(classes), dtype=np.int64)
    seen: Dict[int, int] = {}
    for k, class_index in enumerate(classes.tolist()):
        seen[class_index] = numbers[k] = seen.get(class_index, 0) + 1
    instance_segment_ids = np.zeros(256, dtype=np.int64)
    instance_segment_ids[instance_ids] = (classes + 1) * SEGMENT_ID_DIVISOR + numbers
    return np.where(labelled, instance_segment_ids[instance_id], ids)


def describe_segments(ids: np.ndarray, source: str) -> Tuple[List[Dict], List[Dict]]:
    """segments_info of a (H, W) segment-id map, and COCO instance annotations of its things.

    Segments come in id order; the instance annotations lack "id" and "image_id". `source` names the
    file in errors: a PNG whose ids are not this script's (one the official conversion wrote, say).
    """
    segment_ids, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(ids.shape)
    areas = np.bincount(inverse.ravel())
    boxes = ndimage.find_objects(inverse + 1)  # the bounding slices of each segment
    segments, instances = [], []
    for k, segment_id in enumerate(segment_ids.tolist()):
        if segment_id == 0:
            continue
        class_index, number = divmod(segment_id, SEGMENT_ID_DIVISOR)
        class_index -= 1
        isthing = class_index in ADE20K_THING_CLASSES
        if not 0 <= class_index < NUM_CLASSES or isthing != (number > 0):
            raise BadInputError(
                f"{source}: segment id {segment_id} was not written by this script; convert "
                f"again with --overwrite")
        rows, cols = boxes[k]
        bbox = [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start]
        area = int(areas[k])
        segments.append(
            {"id": segment_id, "category_id": class_index, "area": area, "bbox": bbox, "iscrowd": 0})
        if isthing:
            rle = mask_util.encode(np.asfortranarray(inverse == k, dtype=np.uint8))
            rle["counts"] = rle["counts"].decode("ascii")
            instances.append({"category_id": class_index, "segmentation": rle, "area": area,
                              "bbox": bbox, "iscrowd": 0})
    return segments, instances


def read_array(path: str, mode: Optional[str] = None) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image if mode is None or image.mode == mode else image.convert(mode))


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) from the image's header."""
    with Image.open(path) as image:
        return image.height, image.width


def convert_image(stem: str, inputs: Dict[str, str], panoptic_root: str, overwrite: bool) -> Dict:
    """One image's panoptic PNG (unless it exists) and its json entries.

    Returns {"written": bool, "image": ..., "annotation": ..., "instances": [...]}.
    """
    height, width = image_size(os.path.join(inputs["images"], stem + ".jpg"))
    output = os.path.join(panoptic_root, stem + ".png")
    written = needs_writing([output], overwrite)
    if written:
        semantic_file = os.path.join(inputs["semantic"], stem + ".png")
        instance_file = os.path.join(inputs["instance"], stem + ".png")
        for path in (semantic_file, instance_file):
            if not os.path.isfile(path):
                raise MissingInputError(f"{path} is missing; every image of {inputs['images']} "
                                        f"needs its semantic and its instance annotation")
        semantic = read_array(semantic_file)
        instance = read_array(instance_file, "RGB")
        if semantic.ndim != 2 or semantic.dtype != np.uint8 or semantic.max(initial=0) > NUM_CLASSES:
            raise BadInputError(f"{semantic_file}: expected a label map of 0..{NUM_CLASSES}")
        for path, shape in ((semantic_file, semantic.shape), (instance_file, instance.shape[:2])):
            if shape != (height, width):
                raise BadInputError(f"{path} is {shape[1]}x{shape[0]}, its image {width}x{height}")
        ids = panoptic_segment_ids(semantic, instance, instance_file)
        save_image(id_to_rgb(ids), output)
    else:
        ids = rgb_to_id(read_array(output, "RGB"))
    segments, instances = describe_segments(ids, output)
    for annotation in instances:
        annotation["image_id"] = stem
    return {
        "written": written,
        "image": {"id": stem, "file_name": stem + ".jpg", "width": width, "height": height},
        "annotation": {"image_id": stem, "file_name": stem + ".png", "segments_info": segments},
        "instances": instances,
    }


def prepare_split(root: str, split: str, overwrite: bool = False, progress: bool = True,
                  workers: int = 1) -> Dict[str, int]:
    """Converts one split ("train" or "val"); returns its counts, segments and instances included."""
    inputs = input_paths(root, split)
    outputs = ade20k_panoptic_paths(root, split)
    os.makedirs(outputs["panoptic_root"], exist_ok=True)
    stems = sorted(name[:-4] for name in os.listdir(inputs["images"]) if name.endswith(".jpg"))
    convert = functools.partial(convert_image, inputs=inputs,
                                panoptic_root=outputs["panoptic_root"], overwrite=overwrite)
    results = map_with_progress(convert, stems, workers, f"ade20k_panoptic_{split}", progress)

    images = [result["image"] for result in results]
    write_json({"images": images, "annotations": [result["annotation"] for result in results],
                "categories": ade20k_panoptic_categories()}, outputs["panoptic_json"])
    instances = [annotation for result in results for annotation in result["instances"]]
    for annotation_id, annotation in enumerate(instances, start=1):
        annotation["id"] = annotation_id
    write_json({"images": images, "annotations": instances,
                "categories": ade20k_instance_categories()}, instance_json_path(root, split))
    return dict(counts(result["written"] for result in results),
                segments=sum(len(result["annotation"]["segments_info"]) for result in results),
                instances=len(instances))


def prepare_ade20k_panoptic(root: str, overwrite: bool = False, progress: bool = True,
                            workers: int = 1) -> Dict[str, Dict[str, int]]:
    """Converts both splits; returns the counts per split."""
    require_inputs(
        [path for split in ADE20K_PANOPTIC_SPLITS for path in input_paths(root, split).values()],
        f"{ADE20K_DIR}/{{images,annotations}}/{{training,validation}}/ from "
        f"ADEChallengeData2016.zip and {ADE20K_DIR}/annotations_instance/{{training,validation}}/ "
        f"from annotations_instance.tar", root)
    return {split: prepare_split(root, split, overwrite, progress, workers)
            for split in ADE20K_PANOPTIC_SPLITS}


def main(argv: Optional[List[str]] = None) -> int:
    return run_preparation(
        "prepare_ade20k_panoptic",
        "Write ADE20K-150 panoptic annotations (ade20k_panoptic_{train,val}/ and .json) and "
        "instance annotations (ade20k_instance_{train,val}.json) from ADEChallengeData2016's "
        "semantic and instance annotations.",
        prepare_ade20k_panoptic, argv,
    )


if __name__ == "__main__":
    sys.exit(main())
