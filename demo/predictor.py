"""Running MaskFormer on single images and drawing its results, for the demo and for Python use.

    from predictor import MaskFormerPredictor, load_image
    predictor = MaskFormerPredictor(cfg)            # cfg with add_mask_former_config and weights
    outputs = predictor(load_image("photo.jpg"))    # {"sem_seg": (K, H, W), "panoptic_seg": ...}

`VisualizationDemo` adds the drawing (detectron2's Visualizer) and video support (`VideoFrames`
skips a file's unreadable frames), optionally with the model in worker processes, one per GPU
(`AsyncPredictor`), as detectron2's own demo does.

The results of one image take memory in proportion to its size times the number of classes and
queries (`bytes_per_output_pixel`): the predictor refuses images whose results would exceed a
memory budget (`OutputMemory`: `max_memory_gb`, default DEFAULT_MAX_MEMORY_GB), and
VisualizationDemo downscales them to fit, with a warning.
"""
import atexit
import bisect
import logging
import multiprocessing as mp
import os
import queue
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.engine.defaults import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer
from PIL import Image, ImageOps, UnidentifiedImageError

import mask_former  # noqa: F401  (registers MaskFormer, also in spawned worker processes)
import mask_former.data.datasets  # noqa: F401  (registers the datasets, for their metadata)
from mask_former.config import ConfigError, cpu_fallback
from mask_former.engine import accelerate
from mask_former.errors import UserError
from mask_former.weights import MaskFormerCheckpointer

logger = logging.getLogger("mask_former_demo")

# Larger inputs are downscaled on load: the model sees MIN_SIZE_TEST pixels anyway, and decoding
# a larger image takes too much memory. The results' memory is capped separately (OutputMemory).
MAX_INPUT_PIXELS = 50_000_000

# Memory for the results of one image (and their drawing), in GB (10^9 bytes), unless the caller
# passes another budget (demo.py: --max-memory). Larger images are refused by the predictor and
# downscaled by VisualizationDemo. Little is lost: the model predicts masks at a quarter of its
# input size (INPUT.MIN_SIZE_TEST), so outputs much larger than that are interpolations.
DEFAULT_MAX_MEMORY_GB = 4.0

# Reading a video file stops after this many unreadable frames in a row: the rest of the file is
# broken, or its frame count (CAP_PROP_FRAME_COUNT) is wrong.
MAX_UNREADABLE_RUN = 250

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_TRANSPARENT_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageError(UserError, ValueError):
    """An image the predictor or load_image cannot use; the message names it and its shape."""


def bytes_per_output_pixel(cfg) -> int:
    """Peak memory of one image's inference and drawing, per pixel of the output, in bytes.

    MaskFormer.inference makes the (K, H, W) float32 class scores at the output size (K =
    MODEL.SEM_SEG_HEAD.NUM_CLASSES); where the masks are resized before inference (panoptic, or
    MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE, as MaskFormer.from_config
    decides) it also holds up to six (Q, H, W) float32 arrays at once (Q =
    MODEL.MASK_FORMER.NUM_OBJECT_QUERIES: mask logits, probabilities, kept masks and their
    score-weighted copy). Drawing adds up to one mask per class, and 256 bytes a pixel covers the
    image, the canvas and the id maps. On a GPU, inference takes its part in GPU memory. Peaks
    measured on the CPU (5 to 150 classes, 16 to 100 queries) are 7-60% below this, the most
    for the smallest configs.
    """
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    num_queries = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    test = cfg.MODEL.MASK_FORMER.TEST
    masks_at_output_size = test.PANOPTIC_ON or test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE
    floats = 2 * num_classes + (6 * num_queries if masks_at_output_size else 0)
    return 4 * floats + 256


@dataclass(frozen=True)
class OutputMemory:
    """The memory budget for one image's results: `max_pixels` is the most an image may have for
    its results, `bytes_per_pixel` each, to fit in `max_memory_gb`."""

    max_memory_gb: float
    bytes_per_pixel: int
    max_pixels: int
    num_classes: int
    num_queries: int

    @classmethod
    def from_config(cls, cfg, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB) -> "OutputMemory":
        bytes_per_pixel = bytes_per_output_pixel(cfg)
        max_pixels = max(1, min(MAX_INPUT_PIXELS, int(max_memory_gb * 1e9) // bytes_per_pixel))
        return cls(max_memory_gb, bytes_per_pixel, max_pixels,
                   cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES)


def fitted_size(height: int, width: int, max_pixels: int) -> Tuple[int, int]:
    """(height, width) scaled down, keeping the aspect ratio, to at most `max_pixels` pixels."""
    if height * width <= max_pixels:
        return height, width
    scale = (max_pixels / (height * width)) ** 0.5
    # The min()s keep a very narrow image, whose short side stays 1 pixel, within the limit.
    new_height = max(1, min(int(height * scale), max_pixels))
    new_width = max(1, min(int(width * scale), max_pixels // new_height))
    return min(new_height, max_pixels // new_width), new_width


def load_image(path: str, max_pixels: int = MAX_INPUT_PIXELS) -> np.ndarray:
    """Reads an image file as MaskFormer's demo expects it: (H, W, 3) uint8 in BGR order.

    Applies the EXIF orientation (as detectron2's read_image does), and converts what a person
    may feed it, logging each conversion: grayscale and palette images to 3 channels,
    transparency composited on white, 16-bit (and 32-bit or float) samples scaled to 8 bits,
    and images above `max_pixels` downscaled. Raises FileNotFoundError or ImageError (a
    ValueError), with the file named, for a missing path, a file that is not a readable image
    (Pillow also refuses files that declare 0 pixels), or one too large for Pillow to decode
    safely.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not an image")
    with warnings.catch_warnings():
        # Pillow warns above Image.MAX_IMAGE_PIXELS; such images are downscaled below instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                rgb = np.asarray(_decode(image, path, max_pixels))
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image, or a format Pillow cannot read") from None
        except Image.DecompressionBombError as error:
            raise ImageError(
                f"{path}: too large to decode safely ({error}); downscale it first"
            ) from None
        except OSError as error:  # truncated or corrupt data, permissions
            reason = error.strerror or str(error)
            raise ImageError(f"{path}: cannot read the image ({reason})") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _decode(image: Image.Image, path: str, max_pixels: int) -> Image.Image:
    """Decodes an opened image to an 8-bit RGB PIL image, logging what was converted."""
    if getattr(image, "n_frames", 1) > 1:
        logger.info(f"{path}: {image.n_frames} frames; using the first")
    width, height = image.size
    if width * height > max_pixels:
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly, which saves most of the memory.
        draft_height, draft_width = fitted_size(height, width, max_pixels)
        image.draft("RGB", (draft_width, draft_height))
    image.load()
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image, path)
    if image.width * image.height > max_pixels:
        new_height, new_width = fitted_size(image.height, image.width, max_pixels)
        image = image.resize((new_width, new_height), Image.Resampling.LANCZOS)
    if image.size != (width, height) and image.size != (height, width):
        logger.warning(
            f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels; downscaled to "
            f"{image.width}x{image.height} (the limit is {max_pixels / 1e6:.0f} megapixels)"
        )
    return image


def _to_rgb(image: Image.Image, path: str) -> Image.Image:
    """Converts any Pillow mode to 8-bit RGB."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _HIGH_BIT_DEPTH_MODES:
        samples = np.asarray(image).astype(np.float32)
        low, high = float(samples.min()), float(samples.max())
        if mode.startswith("I") and low >= 0 and (mode != "I" or high > 255) and high <= 65535:
            # The full 16-bit range maps onto the full 8-bit range, whatever the content.
            scaled, how = samples / 257.0, "16-bit samples scaled to 8 bits"
        elif mode == "I" and low >= 0 and high <= 255:
            scaled, how = samples, "32-bit integer samples of 8-bit values kept"
        elif mode == "F" and low >= 0 and high <= 1:
            scaled, how = samples * 255.0, "floating-point samples in [0, 1] scaled to 8 bits"
        else:
            scaled = (samples - low) * (255.0 / max(high - low, 1e-12))
            how = f"{mode} samples stretched from [{low:g}, {high:g}] to 8 bits"
        gray = Image.fromarray(np.clip(scaled.round(), 0, 255).astype(np.uint8))
        logger.info(f"{path}: {how}, grayscale converted to 3 channels")
        return gray.convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA (palette)"
    if image.mode in _TRANSPARENT_MODES:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        composited = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        logger.info(f"{path}: {mode} image: transparency composited on white, alpha dropped")
        return composited
    if mode in ("L", "1"):
        logger.info(f"{path}: grayscale image converted to 3 channels")
    else:  # P, CMYK, YCbCr, LAB, HSV
        logger.info(f"{path}: {mode} image converted to RGB")
    return image.convert("RGB")


def display_metadata(cfg) -> Metadata:
    """Class names and colours for drawing, indexed by the model's contiguous class ids.

    Taken from the metadata of DATASETS.TEST[0] (or TRAIN[0]). MaskFormer numbers things and
    stuff in one range of MODEL.SEM_SEG_HEAD.NUM_CLASSES ids, which `stuff_classes` covers in
    MaskFormer's datasets, so it names both; missing names become "class N" and missing colours
    come from detectron2's palette, so that any config can be drawn.
    """
    datasets = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    source = MetadataCatalog.get(datasets[0]) if datasets else Metadata(name="")
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    names = list(source.get("stuff_classes", None) or [])[:num_classes]
    if len(names) < num_classes:
        logger.warning(
            f"The metadata of {source.name or 'no dataset'!r} names {len(names)} of the model's "
            f"{num_classes} classes; the others are drawn as 'class N'"
        )
        names += [f"class {i}" for i in range(len(names), num_classes)]
    colors = list(source.get("stuff_colors", None) or [])[:num_classes]
    if len(colors) < num_classes:
        palette = colormap(rgb=True, maximum=255)
        colors += [tuple(int(c) for c in palette[i % len(palette)])
                   for i in range(len(colors), num_classes)]
    return Metadata(name=source.name, stuff_classes=names, stuff_colors=colors,
                    thing_classes=names, thing_colors=colors)


class MaskFormerPredictor(DefaultPredictor):
    """MaskFormer on one image: `outputs = MaskFormerPredictor(cfg)(bgr_image)`.

    detectron2's DefaultPredictor (weights from MODEL.WEIGHTS, BGR input converted to
    INPUT.FORMAT, resized as INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST) with input checks and a CPU
    fallback. Returns the model's output for the image at its original size:
    {"sem_seg": (K, H, W) float scores} and, with MODEL.MASK_FORMER.TEST.PANOPTIC_ON,
    {"panoptic_seg": ((H, W) int32 segment ids, [{"id", "isthing", "category_id"}, ...])}.
    Refuses (ImageError) an empty image, and one whose results would take more than
    `max_memory_gb` (more than `self.memory.max_pixels` pixels): downscale it first, e.g. to
    `fitted_size(height, width, predictor.memory.max_pixels)`.
    """

    def __init__(self, cfg, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB):
        # DefaultPredictor.__init__, loading with MaskFormerCheckpointer: weights that leave some
        # of the model's unloaded are refused (WeightsError), not skipped with a warning each.
        self.cfg = cpu_fallback(cfg).clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(self.cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(self.cfg.DATASETS.TEST[0])
        if self.cfg.MODEL.WEIGHTS:
            MaskFormerCheckpointer(self.model).load(self.cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: running a randomly initialised model, "
                           "whose results are meaningless")
        self.aug = T.ResizeShortestEdge(
            [self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MIN_SIZE_TEST], self.cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT is {self.input_format!r}; the predictor takes RGB or BGR")
        self.model = accelerate(self.model, self.cfg)
        self.memory = OutputMemory.from_config(self.cfg, max_memory_gb)

    def __call__(self, original_image: np.ndarray) -> dict:
        image = original_image
        if not isinstance(image, np.ndarray):
            raise ImageError(f"MaskFormerPredictor takes an (H, W, 3) uint8 BGR numpy image, got "
                             f"a {type(image).__name__}; load_image() reads files as that")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"MaskFormerPredictor takes an (H, W, 3) uint8 BGR image, got a "
                             f"{image.dtype} array of shape {image.shape}; load_image() "
                             "converts files to that")
        height, width = image.shape[:2]
        if height == 0 or width == 0:
            raise ImageError(f"MaskFormerPredictor got an empty image: shape {image.shape} has "
                             "no pixels")
        memory = self.memory
        if height * width > memory.max_pixels:
            needed = height * width * memory.bytes_per_pixel / 1e9
            new_height, new_width = fitted_size(height, width, memory.max_pixels)
            raise ImageError(
                f"MaskFormerPredictor: the results for a {width}x{height} image would take about "
                f"{needed:.3g} GB, over max_memory_gb={memory.max_memory_gb:g}; downscale it to "
                f"{new_width}x{new_height} or less first, or pass a larger max_memory_gb"
            )
        return super().__call__(original_image)


def _to_cpu(predictions: dict) -> dict:
    """Moves a prediction's tensors to the CPU, to cross process boundaries and for drawing."""
    out = {}
    for key, value in predictions.items():
        if key == "panoptic_seg":
            segments, info = value
            out[key] = (segments.cpu(), info)
        else:
            out[key] = value.cpu() if isinstance(value, torch.Tensor) else value
    return out


class VideoFrames:
    """The frames of an opened video file or camera, as (H, W, 3) uint8 BGR arrays, skipping
    unreadable ones.

    OpenCV's read() fails both at a corrupt frame and at the end. Where the video reports its
    frame count (CAP_PROP_FRAME_COUNT), a failure before that count is a corrupt frame, and the
    next read() goes on past it. Frames are counted here: CAP_PROP_POS_FRAMES does not advance on
    a failed read, and seeking past a corrupt frame fails as well. Each run of unreadable frames
    is logged once; after `max_unreadable_run` of them in a row, reading stops. Cameras and
    streams without a count end at their first failure.

    Counts, as far as iteration got: `read` (frames yielded), `skipped` (unreadable), `unread`
    (not reached because reading stopped early) and `total` (the reported count, or None).
    """

    def __init__(self, video: cv2.VideoCapture, name: str = "video",
                 max_unreadable_run: int = MAX_UNREADABLE_RUN):
        self.video = video
        self.name = name
        self.max_unreadable_run = max_unreadable_run
        count = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = count if count > 0 else None
        self.read = self.skipped = self.unread = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        index, run = 0, 0  # frames tried; unreadable ones in a row up to `index`
        while self.video.isOpened() and (self.total is None or index < self.total):
            success, frame = self.video.read()
            index += 1
            if success:
                if run:
                    self._warn(index - 1 - run, run, "skipped")
                    run = 0
                self.read += 1
                yield frame
                continue
            if self.total is None:
                return
            run += 1
            self.skipped += 1
            if run == self.max_unreadable_run:
                self.unread = self.total - index
                self._warn(index - run, run, f"{run} in a row: stopped reading, the "
                           f"remaining {self.unread} frames were not read")
                return
        if run:
            self._warn(index - run, run, "skipped")

    def _warn(self, first: int, count: int, what: str) -> None:
        """Logs that `count` frames from the 0-based index `first` were unreadable."""
        frames = (f"frame {first + 1}" if count == 1
                  else f"frames {first + 1}-{first + count}")
        logger.warning(f"{self.name}: {frames} of {self.total} unreadable: {what}")


class VisualizationDemo:
    """Predicts and draws: semantic results as a colour overlay with class names, panoptic
    results as segments with outlines and labels (detectron2's Visualizer), with the class names
    and colours of `display_metadata(cfg)`."""

    def __init__(self, cfg, instance_mode: ColorMode = ColorMode.IMAGE, parallel: bool = False,
                 scale: float = 1.0, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
                 onnx: Optional[str] = None):
        """
        Args:
            cfg: a MaskFormer config with MODEL.WEIGHTS set.
            instance_mode: how the Visualizer colours the image (ColorMode.IMAGE or IMAGE_BW).
            parallel: run the model in worker processes, one per GPU (one on the CPU without
                GPUs), so that drawing one frame overlaps with predicting the next.
            scale: size of the drawings of run_on_image relative to the image (video frames
                are drawn at their own size); labels stay small, so >1 suits small images.
            max_memory_gb: memory for one image's results and drawing; larger images and
                frames are downscaled to fit, with a warning (see bytes_per_output_pixel).
            onnx: an ONNX export of the config's model (tools/export_model.py), run through
                onnxruntime instead of a torch model (onnx_predictor.OnnxPredictor).
        """
        self.metadata = display_metadata(cfg)
        self.instance_mode = instance_mode
        self.parallel = parallel
        self.scale = scale
        self.memory = OutputMemory.from_config(cfg, max_memory_gb)
        if onnx is not None:
            from onnx_predictor import OnnxPredictor

            if parallel:
                raise ValueError("parallel prediction runs torch models; not with onnx")
            self.predictor = OnnxPredictor(cfg, onnx)
        elif parallel:
            self.predictor = AsyncPredictor(cfg, num_gpus=torch.cuda.device_count(),
                                            max_memory_gb=max_memory_gb)
        else:
            self.predictor = MaskFormerPredictor(cfg, max_memory_gb=max_memory_gb)

    def close(self) -> None:
        """Stops the worker processes of parallel=True (they also stop at exit)."""
        if self.parallel:
            self.predictor.shutdown()

    def fit_to_memory(self, image: np.ndarray, name: str, warn: bool = True) -> np.ndarray:
        """`image`, downscaled where its results would not fit in `max_memory_gb`; the warning
        names `name` (a file) and the sizes."""
        height, width = image.shape[:2]
        memory = self.memory
        new_height, new_width = fitted_size(height, width, memory.max_pixels)
        if (new_height, new_width) == (height, width):
            return image
        if warn:
            logger.warning(
                f"{name}: {width}x{height} downscaled to {new_width}x{new_height}: the results "
                f"for {memory.num_classes} classes and {memory.num_queries} queries take about "
                f"{memory.bytes_per_pixel} bytes a pixel, and the memory limit is "
                f"{memory.max_memory_gb:g} GB (demo.py: --max-memory)"
            )
        return cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)

    def run_on_image(self, image: np.ndarray, name: str = "image") -> Tuple[dict, VisImage]:
        """(H, W, 3) uint8 BGR image -> (the model's predictions, the drawing as a VisImage).

        The drawing has the image's size (after `fit_to_memory`, whose warning names `name`)
        times `scale`; `vis_output.get_image()` is RGB.
        """
        image = self.fit_to_memory(image, name)
        predictions = _to_cpu(self.predictor(image))
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, scale=self.scale,
                                instance_mode=self.instance_mode)
        if "panoptic_seg" in predictions:
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            vis_output = visualizer.draw_panoptic_seg(panoptic_seg, segments_info)
        else:
            vis_output = visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0))
        return predictions, vis_output

    def describe(self, predictions: dict) -> str:
        """A short account of a prediction for the log: its segments or classes, by name."""
        names = self.metadata.stuff_classes
        if "panoptic_seg" in predictions:
            info = predictions["panoptic_seg"][1]
            labels = ", ".join(names[s["category_id"]] for s in info)
            count = f"{len(info)} segment" + ("" if len(info) == 1 else "s")
            return count + (f" ({labels})" if labels else "")
        present = torch.unique(predictions["sem_seg"].argmax(dim=0)).tolist()
        return "classes: " + ", ".join(names[c] for c in present)

    def run_on_video(self, video: Union[cv2.VideoCapture, VideoFrames]
                     ) -> Iterator[np.ndarray]:
        """Yields the drawing of each readable frame of `video` (an opened file or camera, or its
        VideoFrames, whose counts then tell what was skipped), as BGR arrays.

        Frames too large for `max_memory_gb` are downscaled (one warning). Uses detectron2's
        VideoVisualizer, which keeps the colours of things stable across frames.
        """
        video_visualizer = VideoVisualizer(self.metadata, self.instance_mode)

        def draw(frame: np.ndarray, predictions: dict) -> np.ndarray:
            predictions = _to_cpu(predictions)
            rgb = frame[:, :, ::-1]
            if "panoptic_seg" in predictions:
                panoptic_seg, segments_info = predictions["panoptic_seg"]
                vis = video_visualizer.draw_panoptic_seg_predictions(rgb, panoptic_seg,
                                                                     segments_info)
            else:
                vis = video_visualizer.draw_sem_seg(rgb, predictions["sem_seg"].argmax(dim=0))
            return np.ascontiguousarray(vis.get_image()[:, :, ::-1])

        if not isinstance(video, VideoFrames):
            video = VideoFrames(video)
        frames = (self.fit_to_memory(frame, video.name, warn=index == 0)
                  for index, frame in enumerate(video))
        if not self.parallel:
            for frame in frames:
                yield draw(frame, self.predictor(frame))
            return
        # Keep the workers busy: up to `buffer_size` frames are in flight while one is drawn.
        buffer_size = self.predictor.default_buffer_size
        pending = deque()
        for frame in frames:
            pending.append(frame)
            self.predictor.put(frame)
            if len(pending) > buffer_size:
                yield draw(pending.popleft(), self.predictor.get())
        while pending:
            yield draw(pending.popleft(), self.predictor.get())


class _StopToken:
    pass


# CUDA cannot be initialised in a forked child: the workers are always spawned.
_SPAWN = mp.get_context("spawn")


class _PredictWorker(_SPAWN.Process):
    """Builds a MaskFormerPredictor in its own process and answers (index, image) tasks."""

    def __init__(self, cfg, max_memory_gb: float, task_queue, result_queue):
        super().__init__(daemon=True)
        self.cfg = cfg
        self.max_memory_gb = max_memory_gb
        self.task_queue = task_queue
        self.result_queue = result_queue

    def run(self):
        try:
            predictor = MaskFormerPredictor(self.cfg, max_memory_gb=self.max_memory_gb)
        except UserError as error:  # the parent raises it, as an in-process predictor would
            self.result_queue.put((None, error))
            return
        except Exception as error:  # reported to the parent, which would otherwise wait forever
            self.result_queue.put((None, f"{type(error).__name__}: {error}"))
            return
        while True:
            task = self.task_queue.get()
            if isinstance(task, _StopToken):
                break
            index, image = task
            try:
                result = _to_cpu(predictor(image))
            except ImageError as error:  # the caller's to handle, as without workers
                result = error
            self.result_queue.put((index, result))


class AsyncPredictor:
    """Predicts in worker processes, one per GPU (one on the CPU with num_gpus=0).

    Drawing a result takes about as long as predicting it, so overlapping the two speeds up
    videos. `put` and `get` return results in the order the images were put; `predictor(image)`
    is `put` then `get`.
    """

    def __init__(self, cfg, num_gpus: int = 1, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB):
        num_workers = max(num_gpus, 1)
        self.task_queue = _SPAWN.Queue(maxsize=num_workers * 3)
        self.result_queue = _SPAWN.Queue(maxsize=num_workers * 3)
        self.procs: List[_PredictWorker] = []
        for gpu in range(num_workers):
            worker_cfg = cfg.clone()
            worker_cfg.defrost()
            worker_cfg.MODEL.DEVICE = f"cuda:{gpu}" if num_gpus > 0 else "cpu"
            self.procs.append(_PredictWorker(worker_cfg, max_memory_gb, self.task_queue,
                                             self.result_queue))
        logger.info(f"Predicting in {num_workers} worker process(es) on "
                    + (f"{num_gpus} GPU(s)" if num_gpus > 0 else "the CPU"))
        self.put_idx = 0
        self.get_idx = 0
        self.result_rank: List[int] = []
        self.result_data: List[dict] = []
        for proc in self.procs:
            proc.start()
        atexit.register(self.shutdown)

    def put(self, image: np.ndarray) -> None:
        self.put_idx += 1
        self.task_queue.put((self.put_idx, image))

    def get(self) -> dict:
        """The next result in the order of `put`; raises the ImageError its image got."""
        result = self._next_result()
        if isinstance(result, ImageError):
            raise result
        return result

    def _next_result(self):
        self.get_idx += 1
        if self.result_rank and self.result_rank[0] == self.get_idx:
            del self.result_rank[0]
            return self.result_data.pop(0)
        while True:
            try:
                index, result = self.result_queue.get(timeout=1.0)
            except queue.Empty:
                if not any(proc.is_alive() for proc in self.procs):
                    raise RuntimeError("All predictor worker processes have exited") from None
                continue
            if index is None:
                if isinstance(result, UserError):
                    raise result
                raise RuntimeError(f"A predictor worker process failed to start: {result}")
            if index == self.get_idx:
                return result
            # Results from several workers arrive out of order: keep them sorted by index.
            position = bisect.bisect(self.result_rank, index)
            self.result_rank.insert(position, index)
            self.result_data.insert(position, result)

    def __len__(self) -> int:
        return self.put_idx - self.get_idx

    def __call__(self, image: np.ndarray) -> dict:
        self.put(image)
        return self.get()

    def shutdown(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                self.task_queue.put(_StopToken())
        for proc in self.procs:
            proc.join(timeout=10)
        self.procs = [proc for proc in self.procs if proc.is_alive()]

    @property
    def default_buffer_size(self) -> int:
        return len(self.procs) * 5
