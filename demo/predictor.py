"""Running MaskFormer on single images and drawing its results, for the demo and for Python use.

    from predictor import MaskFormerPredictor, load_image
    predictor = MaskFormerPredictor(cfg)            # cfg with add_mask_former_config and weights
    outputs = predictor(load_image("photo.jpg"))    # {"sem_seg": (K, H, W), "panoptic_seg": ...}

`VisualizationDemo` adds the drawing (detectron2's Visualizer) and video support, optionally with
the model in worker processes, one per GPU (`AsyncPredictor`), as detectron2's own demo does.
"""
import atexit
import bisect
import logging
import multiprocessing as mp
import os
import queue
import warnings
from collections import deque
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.engine.defaults import DefaultPredictor
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer
from PIL import Image, ImageOps, UnidentifiedImageError

import mask_former  # noqa: F401  (registers MaskFormer, also in spawned worker processes)
from mask_former.engine import accelerate
import mask_former.data.datasets  # noqa: F401  (registers the datasets, for their metadata)

logger = logging.getLogger("mask_former_demo")

# Larger inputs are downscaled on load: the model sees MIN_SIZE_TEST pixels anyway, and the
# full-size (K, H, W) score map and the drawing of a larger image take too much memory and time.
MAX_INPUT_PIXELS = 50_000_000

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_TRANSPARENT_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def load_image(path: str, max_pixels: int = MAX_INPUT_PIXELS) -> np.ndarray:
    """Reads an image file as MaskFormer's demo expects it: (H, W, 3) uint8 in BGR order.

    Applies the EXIF orientation (as detectron2's read_image does), and converts what a person
    may feed it, logging each conversion: grayscale and palette images to 3 channels,
    transparency composited on white, 16-bit (and 32-bit or float) samples scaled to 8 bits,
    and images above `max_pixels` downscaled. Raises FileNotFoundError or ValueError, with the
    file named, for a missing path, a file that is not a readable image, or one too large for
    Pillow to decode safely.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not an image")
    with warnings.catch_warnings():
        # Pillow warns above Image.MAX_IMAGE_PIXELS; such images are downscaled below instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                rgb = np.asarray(_decode(image, path, max_pixels))
        except UnidentifiedImageError:
            raise ValueError(f"{path}: not an image, or a format Pillow cannot read") from None
        except Image.DecompressionBombError as error:
            raise ValueError(
                f"{path}: too large to decode safely ({error}); downscale it first"
            ) from None
        except OSError as error:  # truncated or corrupt data, permissions
            reason = error.strerror or str(error)
            raise ValueError(f"{path}: cannot read the image ({reason})") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _decode(image: Image.Image, path: str, max_pixels: int) -> Image.Image:
    """Decodes an opened image to an 8-bit RGB PIL image, logging what was converted."""
    if getattr(image, "n_frames", 1) > 1:
        logger.info(f"{path}: {image.n_frames} frames; using the first")
    width, height = image.size
    if width * height > max_pixels:
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly, which saves most of the memory.
        scale = (max_pixels / (width * height)) ** 0.5
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    image.load()
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image, path)
    if image.width * image.height > max_pixels:
        scale = (max_pixels / (image.width * image.height)) ** 0.5
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
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


def cpu_fallback(cfg):
    """`cfg` on the CPU (a copy, with a warning) where it asks for CUDA and there is none."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE={cfg.MODEL.DEVICE} but CUDA is not available: "
                       "running on the CPU")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
    return cfg


class MaskFormerPredictor(DefaultPredictor):
    """MaskFormer on one image: `outputs = MaskFormerPredictor(cfg)(bgr_image)`.

    detectron2's DefaultPredictor (weights from MODEL.WEIGHTS, BGR input converted to
    INPUT.FORMAT, resized as INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST) with input checks and a CPU
    fallback. Returns the model's output for the image at its original size:
    {"sem_seg": (K, H, W) float scores} and, with MODEL.MASK_FORMER.TEST.PANOPTIC_ON,
    {"panoptic_seg": ((H, W) int32 segment ids, [{"id", "isthing", "category_id"}, ...])}.
    """

    def __init__(self, cfg):
        cfg = cpu_fallback(cfg)
        if not cfg.MODEL.WEIGHTS:
            logger.warning("MODEL.WEIGHTS is empty: running a randomly initialised model, "
                           "whose results are meaningless")
        super().__init__(cfg)  # builds the eager model and loads MODEL.WEIGHTS
        self.model = accelerate(self.model, cfg)

    def __call__(self, original_image: np.ndarray) -> dict:
        image = original_image
        if not isinstance(image, np.ndarray):
            raise ValueError(f"MaskFormerPredictor takes an (H, W, 3) uint8 BGR numpy image, got "
                             f"a {type(image).__name__}; load_image() reads files as that")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"MaskFormerPredictor takes an (H, W, 3) uint8 BGR image, got a "
                             f"{image.dtype} array of shape {image.shape}; load_image() "
                             "converts files to that")
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


class VisualizationDemo:
    """Predicts and draws: semantic results as a colour overlay with class names, panoptic
    results as segments with outlines and labels (detectron2's Visualizer), with the class names
    and colours of `display_metadata(cfg)`."""

    def __init__(self, cfg, instance_mode: ColorMode = ColorMode.IMAGE, parallel: bool = False,
                 scale: float = 1.0, onnx: Optional[str] = None):
        """
        Args:
            cfg: a MaskFormer config with MODEL.WEIGHTS set.
            instance_mode: how the Visualizer colours the image (ColorMode.IMAGE or IMAGE_BW).
            parallel: run the model in worker processes, one per GPU (one on the CPU without
                GPUs), so that drawing one frame overlaps with predicting the next.
            scale: size of the drawings of run_on_image relative to the image (video frames
                are drawn at their own size); labels stay small, so >1 suits small images.
            onnx: an ONNX export of the config's model (tools/export_model.py), run through
                onnxruntime instead of a torch model (onnx_predictor.OnnxPredictor).
        """
        self.metadata = display_metadata(cfg)
        self.instance_mode = instance_mode
        self.parallel = parallel
        self.scale = scale
        if onnx is not None:
            from onnx_predictor import OnnxPredictor

            if parallel:
                raise ValueError("parallel prediction runs torch models; not with onnx")
            self.predictor = OnnxPredictor(cfg, onnx)
        elif parallel:
            self.predictor = AsyncPredictor(cfg, num_gpus=torch.cuda.device_count())
        else:
            self.predictor = MaskFormerPredictor(cfg)

    def close(self) -> None:
        """Stops the worker processes of parallel=True (they also stop at exit)."""
        if self.parallel:
            self.predictor.shutdown()

    def run_on_image(self, image: np.ndarray) -> Tuple[dict, VisImage]:
        """(H, W, 3) uint8 BGR image -> (the model's predictions, the drawing as a VisImage).

        The drawing has the image's size times `scale`; `vis_output.get_image()` is RGB.
        """
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

    @staticmethod
    def _frames(video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        while video.isOpened():
            success, frame = video.read()
            if not success:
                break
            yield frame

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Yields the drawing of each frame of `video` (a file or a camera), as BGR arrays.

        Uses detectron2's VideoVisualizer, which keeps the colours of things stable across frames.
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

        frames = self._frames(video)
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

    def __init__(self, cfg, task_queue, result_queue):
        super().__init__(daemon=True)
        self.cfg = cfg
        self.task_queue = task_queue
        self.result_queue = result_queue

    def run(self):
        try:
            predictor = MaskFormerPredictor(self.cfg)
        except Exception as error:  # reported to the parent, which would otherwise wait forever
            self.result_queue.put((None, f"{type(error).__name__}: {error}"))
            return
        while True:
            task = self.task_queue.get()
            if isinstance(task, _StopToken):
                break
            index, image = task
            self.result_queue.put((index, _to_cpu(predictor(image))))


class AsyncPredictor:
    """Predicts in worker processes, one per GPU (one on the CPU with num_gpus=0).

    Drawing a result takes about as long as predicting it, so overlapping the two speeds up
    videos. `put` and `get` return results in the order the images were put; `predictor(image)`
    is `put` then `get`.
    """

    def __init__(self, cfg, num_gpus: int = 1):
        num_workers = max(num_gpus, 1)
        self.task_queue = _SPAWN.Queue(maxsize=num_workers * 3)
        self.result_queue = _SPAWN.Queue(maxsize=num_workers * 3)
        self.procs: List[_PredictWorker] = []
        for gpu in range(num_workers):
            worker_cfg = cfg.clone()
            worker_cfg.defrost()
            worker_cfg.MODEL.DEVICE = f"cuda:{gpu}" if num_gpus > 0 else "cpu"
            self.procs.append(_PredictWorker(worker_cfg, self.task_queue, self.result_queue))
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
