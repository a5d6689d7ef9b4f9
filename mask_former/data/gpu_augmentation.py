"""Semantic training augmentation on the GPU (INPUT.GPU_AUGMENTATION), for loaders the Python
mapper cannot keep up with.

The CPU mapper (MaskFormerSemanticDatasetMapper) decodes, resizes, crops, colour-jitters and flips
each image in a worker process and builds its per-class masks there; at the ADE20K recipe's
sizes that is tens of milliseconds an image, and the batches of masks it ships are large. Here the
workers only decode and check (SemanticDecodeMapper), and the main process applies the same
augmentations to the batch on the training device (GPUSemanticAugmentation):

- resize, crop and flip are drawn by the very detectron2 augmentations the CPU mapper uses
  (`build_semantic_augmentations`, from NumPy's global random state), so their distribution is the
  CPU mapper's; the image is resized with antialiased bilinear interpolation (as PIL's, which the
  CPU mapper uses for uint8 images), the labels with nearest-neighbour (the same operation as the
  CPU mapper's);
- the SSD colour jitter is a port of detectron2's ColorAugSSDTransform (the same random draws,
  the same truncations to uint8, OpenCV's 8-bit HSV conventions);
- padding and the per-class targets are as the CPU mapper's.

The results are not bit-identical to the CPU mapper's (other random streams, float resampling
rounding), but distributed the same: tests/test_gpu_augmentation.py compares the two.
"""
import random
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import Instances

from ..errors import ConfigError
from .dataset_mappers.mask_former_semantic_dataset_mapper import (
    IMAGE_PAD_VALUE,
    MaskFormerSemanticDatasetMapper,
    build_semantic_augmentations,
    train_metadata,
)
from .io import pad_to_multiple

CONFIG_KEY = "INPUT.GPU_AUGMENTATION"


class SemanticDecodeMapper(MaskFormerSemanticDatasetMapper):
    """The worker half: reads and checks an image and its label map, nothing else.

    Returns the dataset dict with "image" (3, H, W) uint8 in the image format and "sem_seg"
    (H, W) int32 class ids, both at the file's size.
    """

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict, image, label = self.read(dataset_dict)
        dataset_dict["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["sem_seg"] = torch.from_numpy(label.astype(np.int32))
        return dataset_dict


# OpenCV's 8-bit HSV: H in [0, 180) (degrees / 2), S and V in [0, 255].
def bgr_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 BGR -> (3, H, W) uint8 HSV, as cv2.cvtColor(COLOR_BGR2HSV)."""
    b, g, r = image.float().unbind(0)
    value = torch.maximum(torch.maximum(b, g), r)
    spread = value - torch.minimum(torch.minimum(b, g), r)
    saturation = torch.where(value > 0, spread * 255 / value.clamp_min(1), torch.zeros_like(value))
    safe = spread.clamp_min(1e-6)
    hue = torch.where(value == r, 60 * (g - b) / safe,
                      torch.where(value == g, 120 + 60 * (b - r) / safe, 240 + 60 * (r - g) / safe))
    hue = torch.where(spread > 0, hue, torch.zeros_like(hue))
    hue = torch.where(hue < 0, hue + 360, hue) / 2
    hsv = torch.stack([hue.round() % 180, saturation.round(), value])
    return hsv.clamp(0, 255).to(torch.uint8)


def hsv_to_bgr(hsv: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 HSV (OpenCV's 8-bit ranges) -> (3, H, W) uint8 BGR, as cv2.cvtColor."""
    h, s, v = hsv.float().unbind(0)
    h = h * 2 / 60  # sector in [0, 6)
    s = s / 255
    sector = h.floor()
    f = h - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.long() % 6
    # (R, G, B) per sector: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    choices_r = torch.stack([v, q, p, p, t, v])
    choices_g = torch.stack([t, v, v, q, p, p])
    choices_b = torch.stack([p, p, t, v, v, q])
    index = sector[None]
    r = choices_r.gather(0, index)[0]
    g = choices_g.gather(0, index)[0]
    b = choices_b.gather(0, index)[0]
    return torch.stack([b, g, r]).round().clamp(0, 255).to(torch.uint8)


def _convert(channel: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """ColorAugSSDTransform.convert: float32 affine map, clipped, truncated to uint8."""
    return (channel.float() * alpha + beta).clamp(0, 255).to(torch.uint8)


def color_aug_ssd(image: torch.Tensor, rng: random.Random, is_rgb: bool,
                  aug: ColorAugSSDTransform) -> torch.Tensor:
    """detectron2's ColorAugSSDTransform.apply_image on a (3, H, W) uint8 tensor, drawing from
    `rng` in the same order (brightness, then contrast before or after saturation and hue)."""
    if is_rgb:
        image = image.flip(0)

    def contrast(img):
        if rng.randrange(2):
            return _convert(img, alpha=rng.uniform(aug.contrast_low, aug.contrast_high))
        return img

    def saturation(img):
        if rng.randrange(2):
            hsv = bgr_to_hsv(img)
            hsv[1] = _convert(hsv[1], alpha=rng.uniform(aug.saturation_low, aug.saturation_high))
            return hsv_to_bgr(hsv)
        return img

    def hue(img):
        if rng.randrange(2):
            hsv = bgr_to_hsv(img)
            hsv[0] = ((hsv[0].long() + rng.randint(-aug.hue_delta, aug.hue_delta)) % 180).to(torch.uint8)
            return hsv_to_bgr(hsv)
        return img

    if rng.randrange(2):
        image = _convert(image, beta=rng.uniform(-aug.brightness_delta, aug.brightness_delta))
    if rng.randrange(2):
        image = hue(saturation(contrast(image)))
    else:
        image = contrast(hue(saturation(image)))
    return image.flip(0) if is_rgb else image


class GPUSemanticAugmentation:
    """The CPU mapper's augmentations, padding and targets, applied to decoded batches on a device.

    Call with a batch from SemanticDecodeMapper; returns it as MaskFormerSemanticDatasetMapper
    would have ("image" (3, H, W) uint8, "sem_seg" (H, W) int64, "instances" with gt_classes and
    gt_masks), its tensors on `device`.
    """

    def __init__(self, cfg, device: Optional[str] = None, seed: Optional[int] = None):
        """
        Args:
            cfg: the training config (INPUT.*, MODEL.DEVICE; the ignore label of DATASETS.TRAIN).
            device: where to augment; MODEL.DEVICE if None.
            seed: of the colour jitter's stream; drawn from NumPy's global state if None (which
                detectron2 seeds from SEED).
        """
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ConfigError(f"{CONFIG_KEY}: INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT!r}")
        self.is_rgb = cfg.INPUT.FORMAT == "RGB"
        self.ignore_label = train_metadata(cfg).ignore_label
        self.size_divisibility = cfg.INPUT.SIZE_DIVISIBILITY
        self.device = torch.device(device or cfg.MODEL.DEVICE)
        self.augmentations = build_semantic_augmentations(cfg, self.ignore_label)
        # The colour jitter's own stream: ColorAugSSDTransform draws from Python's `random`.
        self.rng = random.Random(seed if seed is not None else int(np.random.randint(2**31)))

    def _augment(self, image: torch.Tensor, label: torch.Tensor):
        """The augmentations in the CPU mapper's order; resize, crop and flip drawn by detectron2's
        own augmentations (which read only the image's size, or the labels for an area-constrained
        crop), applied here."""
        for aug in self.augmentations:
            if isinstance(aug, ColorAugSSDTransform):
                image = color_aug_ssd(image, self.rng, self.is_rgb, aug)
                continue
            shape_only = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (*image.shape[-2:], 3))
            if isinstance(aug, T.RandomCrop_CategoryAreaConstraint):
                # The area test reads the labels (a copy to the host), only where it applies.
                needs_labels = aug.single_category_max_area < 1.0
                tfm = aug.get_transform(shape_only, label.cpu().numpy() if needs_labels else None)
            else:
                tfm = aug.get_transform(shape_only)
            if isinstance(tfm, T.ResizeTransform):
                size = (tfm.new_h, tfm.new_w)
                image = F.interpolate(image[None].float(), size=size, mode="bilinear",
                                      align_corners=False, antialias=True)[0]
                image = image.round().clamp(0, 255).to(torch.uint8)
                label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0]
            elif isinstance(tfm, T.CropTransform):
                rows, cols = slice(tfm.y0, tfm.y0 + tfm.h), slice(tfm.x0, tfm.x0 + tfm.w)
                image, label = image[:, rows, cols], label[rows, cols]
            elif isinstance(tfm, T.HFlipTransform):
                image, label = image.flip(-1), label.flip(-1)
            elif not isinstance(tfm, T.NoOpTransform):
                raise ConfigError(f"{CONFIG_KEY}: there is no GPU version of {type(tfm).__name__} "
                                 f"(from {type(aug).__name__}); set {CONFIG_KEY} False")
        return image, label

    def map(self, item: Dict) -> Dict:
        """One decoded dataset dict -> the CPU mapper's output, on the device."""
        item = dict(item)
        image = item["image"].to(self.device, non_blocking=True)
        label = item.pop("sem_seg").to(self.device, non_blocking=True)
        image, label = self._augment(image, label)
        label = label.long()
        if self.size_divisibility > 0:
            image = pad_to_multiple(image, self.size_divisibility, IMAGE_PAD_VALUE)
            label = pad_to_multiple(label, self.size_divisibility, self.ignore_label)
        classes = torch.unique(label)  # sorted, as the CPU mapper's targets
        classes = classes[classes != self.ignore_label]
        instances = Instances(tuple(label.shape))
        instances.gt_classes = classes
        instances.gt_masks = label[None] == classes[:, None, None]
        item.update(image=image.contiguous(), sem_seg=label, instances=instances)
        return item

    def __call__(self, batch: List[Dict]) -> List[Dict]:
        return [self.map(item) for item in batch]


class GPUAugmentedLoader:
    """Iterates `loader`'s decoded batches, augmented by `augmentation` in the consuming thread.

    On a GPU, batches are pinned in a background thread first, and augmented on a stream of their
    own: the augmentation's host syncs (each image's classes decide its number of targets) then
    wait for the augmentation's kernels only, not for the training step queued before them, and
    the step that uses a batch waits for its augmentation on the device. Other attributes are the
    loader's.
    """

    # engine.pin_batches leaves this loader alone: its batches are on the device already.
    yields_device_batches = True

    def __init__(self, loader: Iterable, augmentation: GPUSemanticAugmentation):
        self.loader = loader
        self.augmentation = augmentation

    def __iter__(self):
        from ..engine.pinned_batches import PinnedBatches

        device = self.augmentation.device
        if device.type != "cuda":
            for batch in self.loader:
                yield self.augmentation(batch)
            return
        stream = torch.cuda.Stream(device=device)
        for batch in PinnedBatches(self.loader):
            with torch.cuda.stream(stream):
                batch = self.augmentation(batch)
            consumer = torch.cuda.current_stream(device)
            consumer.wait_stream(stream)
            for item in batch:  # made on `stream`, used on the consumer's: keep them allocated
                for tensor in (item["image"], item["sem_seg"], item["instances"].gt_classes,
                               item["instances"].gt_masks):
                    tensor.record_stream(consumer)
            yield batch

    def __getattr__(self, name):
        if name in ("loader", "augmentation"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)
