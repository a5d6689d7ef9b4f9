"""An embedded, procedurally generated scene dataset that needs no download.

Each 128x128 image has two stuff classes (a sky-like gradient above a wavy horizon, textured
ground below) and 1-4 things (circles, squares, triangles; each with a colour family of its own,
jittered, and a stripe texture), which may occlude each other. Every image is a pure function of
(split seed, index), so the dataset is identical on every machine.

Files, written once under `root/`:
    {split}/images/NNNN.png          RGB image
    {split}/semantic/NNNN.png        uint8 class ids (0..4)
    {split}/panoptic/NNNN.png        RGB-encoded segment ids (id = R + 256 G + 256^2 B)
    {split}/panoptic.json            [{"file_name", "image_id", "segments_info": [...]}]
    {split}/instances.json           COCO instances: every thing segment as one instance (RLE
                                     mask, bbox, area, iscrowd 0), category id = class id
"""
import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

from .io import id_to_rgb


logger = logging.getLogger(__name__)

CLASSES = ["sky", "ground", "circle", "square", "triangle"]
IS_THING = [False, False, True, True, True]
COLORS = [(70, 130, 180), (152, 251, 152), (220, 20, 60), (255, 215, 0), (138, 43, 226)]
# Base RGB of each thing class; each instance is jittered around it.
THING_BASE_COLORS = {2: (200, 60, 50), 3: (60, 170, 70), 4: (70, 80, 200)}
IMAGE_SIZE = 128
SPLITS = {"train": (600, 1000), "val": (100, 2000)}  # split -> (number of images, seed)
VERSION = 2  # 2: instances.json added (images, labels and panoptic files as in 1)


def _texture(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth noise in [-1, 1] of shape (size, size)."""
    coarse = rng.standard_normal((size // 8, size // 8)).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth * scale, -1, 1)


def _shape_mask(rng: np.random.Generator, category: int, size: int) -> np.ndarray:
    """A filled circle, square or triangle at a random place: (size, size) bool."""
    mask = np.zeros((size, size), np.uint8)
    radius = int(rng.integers(10, 26))
    cx, cy = (int(v) for v in rng.integers(radius // 2, size - radius // 2, size=2))
    if CLASSES[category] == "circle":
        cv2.circle(mask, (cx, cy), radius, 1, -1)
    elif CLASSES[category] == "square":
        angle = rng.uniform(0, 90)
        box = cv2.boxPoints(((cx, cy), (1.6 * radius, 1.6 * radius), angle))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    else:
        start = rng.uniform(0, 2 * np.pi)
        angles = start + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def generate_sample(seed: int, size: int = IMAGE_SIZE) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[dict]]:
    """One scene: image (H, W, 3) uint8, semantic (H, W) uint8, segment ids (H, W) int32,
    segments_info [{"id", "category_id", "iscrowd", "isthing", "area"}]."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size, dtype=np.float32)[:, None]
    cols = np.arange(size, dtype=np.float32)[None, :]
    horizon = size * rng.uniform(0.35, 0.65) + 6 * np.sin(cols / size * 2 * np.pi * rng.uniform(0.5, 2)
                                                            + rng.uniform(0, 2 * np.pi))
    semantic = np.where(rows < horizon, 0, 1).astype(np.uint8)

    sky_top, sky_bottom = np.array([90, 140, 230]), np.array([180, 210, 250])
    t = (rows / size)[..., None]
    sky = sky_top * (1 - t) + sky_bottom * t + 25 * _texture(rng, size, 0.6)[..., None]
    ground_color = np.array([120, 100, 60]) + rng.integers(-20, 20, size=3)
    ground = ground_color + 45 * _texture(rng, size, 1.5)[..., None]
    ground = ground + 15 * np.sin(rows / 3.0 + rng.uniform(0, 6))[..., None]
    image = np.where((semantic == 0)[..., None], sky, ground)

    segment_ids = semantic.astype(np.int32) + 1  # stuff: id 1 = sky, id 2 = ground
    thing_ids = []
    for thing in range(int(rng.integers(1, 5))):
        category = int(rng.integers(2, 5))
        mask = _shape_mask(rng, category, size)
        color = np.array(THING_BASE_COLORS[category]) + rng.integers(-40, 40, size=3)
        stripes = 20 * np.sin((rows * rng.uniform(-1, 1) + cols) / rng.uniform(2, 5))
        shaded = color + stripes[..., None] + 10 * _texture(rng, size, 1.0)[..., None]
        image = np.where(mask[..., None], shaded, image)
        semantic[mask] = category
        segment_id = 3 + thing
        segment_ids[mask] = segment_id
        thing_ids.append((segment_id, category))

    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    segments = [(1, 0), (2, 1)] + thing_ids
    segments_info = []
    for segment_id, category in segments:
        area = int((segment_ids == segment_id).sum())
        if area > 0:  # fully occluded shapes leave no segment
            segments_info.append({"id": segment_id, "category_id": category, "iscrowd": 0,
                                  "isthing": IS_THING[category], "area": area})
    return image, semantic, segment_ids, segments_info


def instance_annotations(segment_ids: np.ndarray, segments_info: List[dict]) -> List[dict]:
    """COCO instance annotations (without "id" and "image_id") of a scene's thing segments."""
    annotations = []
    for segment in segments_info:
        if not segment["isthing"]:
            continue
        rle = mask_util.encode(np.asfortranarray(segment_ids == segment["id"], dtype=np.uint8))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append({"category_id": segment["category_id"], "segmentation": rle,
                            "area": segment["area"], "bbox": mask_util.toBbox(rle).tolist(),
                            "iscrowd": 0})
    return annotations


def instance_categories() -> List[dict]:
    """The COCO "categories" of instances.json: the thing classes, id = class id."""
    return [{"id": c, "name": CLASSES[c]} for c, thing in enumerate(IS_THING) if thing]


def _write_split(directory: str, split: str) -> None:
    count, seed = SPLITS[split]
    for sub in ("images", "semantic", "panoptic"):
        os.makedirs(os.path.join(directory, split, sub), exist_ok=True)
    annotations, images, instances = [], [], []
    for index in range(count):
        image, semantic, segment_ids, segments_info = generate_sample(seed + index)
        name = f"{index:04d}.png"
        image_id = f"{split}_{index:04d}"
        cv2.imwrite(os.path.join(directory, split, "images", name), image[..., ::-1])
        cv2.imwrite(os.path.join(directory, split, "semantic", name), semantic)
        cv2.imwrite(os.path.join(directory, split, "panoptic", name), id_to_rgb(segment_ids)[..., ::-1])
        annotations.append({"file_name": name, "image_id": image_id,
                            "segments_info": segments_info})
        images.append({"id": image_id, "file_name": name, "height": IMAGE_SIZE,
                       "width": IMAGE_SIZE})
        for instance in instance_annotations(segment_ids, segments_info):
            instances.append(dict(instance, id=len(instances) + 1, image_id=image_id))
    with open(os.path.join(directory, split, "panoptic.json"), "w") as f:
        json.dump(annotations, f)
    with open(instances_json(directory, split), "w") as f:
        json.dump({"images": images, "annotations": instances,
                   "categories": instance_categories()}, f)


def instances_json(root: str, split: str) -> str:
    """The COCO instance annotations of a split (COCOEvaluator's "json_file")."""
    return os.path.join(root, split, "instances.json")


def default_root() -> str:
    cache = os.environ.get("MASK_FORMER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "mask_former"))
    return os.path.join(cache, f"synthetic_shapes_v{VERSION}")


def ensure_generated(root: str) -> str:
    """Writes the dataset under `root` unless it is there already; returns `root`.

    Writes into a temporary folder renamed into place at the end, so concurrent workers and
    interrupted runs never see a half-written dataset.
    """
    if os.path.isfile(os.path.join(root, "DONE")):
        return root
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    logger.info(f"Generating the synthetic shapes dataset in {root} (once, a few seconds) ...")
    staging = tempfile.mkdtemp(prefix=".synthetic_shapes_", dir=parent)
    try:
        for split in SPLITS:
            _write_split(staging, split)
        open(os.path.join(staging, "DONE"), "w").close()
        try:
            os.replace(staging, root)
        except OSError:  # another process finished first
            if not os.path.isfile(os.path.join(root, "DONE")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


# What a split's dataset dicts carry besides the image.
KINDS = ("sem_seg", "panoptic", "instance")


def load_synthetic_shapes(root: str, split: str, kind: str) -> List[Dict]:
    """Detectron2 dataset dicts of one split.

    kind "sem_seg": the semantic label map; "panoptic": that and the panoptic PNG with
    segments_info; "instance": COCO-style "annotations" (RLE, bbox in XYWH_ABS) of the things, with
    contiguous category ids 0..2 (circle, square, triangle).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; choose one of {list(KINDS)}")
    ensure_generated(root)
    with open(os.path.join(root, split, "panoptic.json")) as f:
        annotations = json.load(f)
    instances: Dict[str, List[Dict]] = defaultdict(list)
    if kind == "instance":
        with open(instances_json(root, split)) as f:
            coco = json.load(f)
        thing_ids = [category["id"] for category in coco["categories"]]
        for instance in coco["annotations"]:
            instances[instance["image_id"]].append({
                "segmentation": instance["segmentation"], "bbox": instance["bbox"],
                "bbox_mode": BoxMode.XYWH_ABS, "iscrowd": instance["iscrowd"],
                "category_id": thing_ids.index(instance["category_id"]),
            })
    dicts = []
    for ann in annotations:
        record = {
            "file_name": os.path.join(root, split, "images", ann["file_name"]),
            "image_id": ann["image_id"],
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
        }
        if kind != "instance":
            record["sem_seg_file_name"] = os.path.join(root, split, "semantic", ann["file_name"])
        if kind == "panoptic":
            record["pan_seg_file_name"] = os.path.join(root, split, "panoptic", ann["file_name"])
            record["segments_info"] = ann["segments_info"]
        if kind == "instance":
            record["annotations"] = instances[ann["image_id"]]
        dicts.append(record)
    return dicts
