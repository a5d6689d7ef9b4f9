#!/usr/bin/env python
"""MaskFormer demo: segments images, a video or a webcam stream and draws the results.

    python demo/demo.py --input photo.jpg --output photo_seg.png
    python demo/demo.py --input small.png --output small_seg.png --scale 3   # larger drawing
    python demo/demo.py --input photos/ 'more/*.png' --output results/
    python demo/demo.py --video-input clip.mp4 --output clip_seg.mp4
    python demo/demo.py --config-file configs/ade20k/maskformer_R50.yaml --input photo.jpg \\
        --output out.png --opts MODEL.WEIGHTS /path/to/model_final.pkl

The default config is the quick-start model's, with the weights `bash tools/quickstart.sh` saves
(output/quickstart/model_final.pth). Semantic results are drawn as a colour overlay with class
names, panoptic results as segments with outlines and labels. Without --output the results are
shown in a window (which the headless OpenCV that setup.py installs cannot open). Images and
frames whose results would take more than --max-memory are downscaled, with a warning. Problems
with the inputs are reported in one line each; with several inputs a bad one is skipped and the
rest processed, as are a video's unreadable frames. The exit status is 0 when something was
processed.
"""
import argparse
import glob
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import tqdm
from PIL import Image

from mask_former.config import REPO_ROOT, cpu_fallback, load_config, resolve_config_file
from mask_former.data.metadata_file import MetadataFileError, register_metadata_beside
from mask_former.errors import UserError
from mask_former.weights import check_weights
from predictor import (  # demo/predictor.py, beside this file
    DEFAULT_MAX_MEMORY_GB, VideoFrames, VisualizationDemo, load_image, logger,
)

QUICKSTART_CONFIG = REPO_ROOT / "configs" / "quickstart" / "maskformer_tiny_shapes.yaml"
QUICKSTART_WEIGHTS = REPO_ROOT / "output" / "quickstart" / "model_final.pth"
WINDOW_NAME = "MaskFormer"
ESC = 27
# Writable video containers and the codec used for each.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}

NO_WEIGHTS_ADVICE = (
    "Run `bash tools/quickstart.sh` to train the quick-start model (a few minutes on a CPU; "
    f"it saves {QUICKSTART_WEIGHTS.relative_to(REPO_ROOT)}, which the default config then uses), "
    "or download an official MaskFormer model-zoo checkpoint and pass its config with "
    "--config-file and `--opts MODEL.WEIGHTS /path/to/model.pkl`; "
    "--random-weights runs an untrained model."
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo.py", description="MaskFormer demo: segment images, a video or a webcam.",
    )
    parser.add_argument(
        "--config-file", metavar="FILE", default=str(QUICKSTART_CONFIG.relative_to(REPO_ROOT)),
        help="config file; a relative path is looked up in the current directory, then in the "
             "repository (default: %(default)s)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", metavar="PATH",
        help="image files, directories (their images) or glob patterns such as 'photos/*.jpg'",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first camera")
    parser.add_argument(
        "--output", metavar="PATH",
        help="where to save the drawings: a file for one image (its extension picks the format) "
             "or a directory for several; a video file (.mp4, .avi) or directory for a video. "
             "Without it the results are shown in a window.",
    )
    parser.add_argument(
        "--confidence-threshold", type=_probability, metavar="P",
        help="panoptic: keep segments whose class score exceeds P "
             "(MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD; default: the config's)",
    )
    parser.add_argument(
        "--scale", type=_positive, default=1.0, metavar="S",
        help="images only: draw at S times the input's size, with labels as small as at 1; "
             "for small images such as the quick-start dataset's (default: 1)",
    )
    parser.add_argument(
        "--max-memory", type=_gigabytes, default=DEFAULT_MAX_MEMORY_GB, metavar="GB",
        help="memory for one image's (or frame's) results and drawing, which grows with its "
             "pixels times the config's classes and queries; larger inputs are downscaled to "
             "fit, with a warning (default: %(default)g)",
    )
    parser.add_argument(
        "--random-weights", action="store_true",
        help="run a randomly initialised model (to try the demo without weights; the results "
             "are meaningless)",
    )
    parser.add_argument(
        "--onnx", metavar="FILE",
        help="run this ONNX export of the config's model (tools/export_model.py) through "
             "onnxruntime instead of the torch model; MODEL.WEIGHTS is then not needed",
    )
    parser.add_argument(
        "--parallel", action="store_true",
        help="predict in worker processes, one per GPU, while drawing (faster videos)",
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides, e.g. --opts MODEL.WEIGHTS model.pkl (must come last)",
    )
    return parser


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _probability(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _gigabytes(text: str) -> float:
    value = _number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of GB")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if not 0.0 < value <= 16.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 16]")
    return value


# ---------------------------------------------------------------- config and weights

def setup_cfg(args: argparse.Namespace):
    """The frozen config: file, --opts, device, threshold and weights, checked."""
    config_file = resolve_config_file(args.config_file)
    try:  # class names of a converted checkpoint (tools/convert-hf-to-d2.py), from metadata.json
        register_metadata_beside(config_file)
    except MetadataFileError as error:
        raise UserError(str(error)) from None
    cfg = cpu_fallback(load_config(str(config_file), args.opts))
    if args.confidence_threshold is not None:
        if not cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON:
            logger.warning("--confidence-threshold only applies to panoptic inference "
                           "(MODEL.MASK_FORMER.TEST.PANOPTIC_ON is False): ignored")
        cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = args.confidence_threshold
    if args.onnx is None:  # an ONNX export holds its weights
        resolve_weights(cfg, config_file, args.random_weights)
    cfg.freeze()
    return cfg


def resolve_weights(cfg, config_file: Path, random_weights: bool) -> None:
    """Sets MODEL.WEIGHTS to an existing file, or refuses with advice. (Whether it fits the
    model is checked as MaskFormerPredictor loads it.)"""
    weights = cfg.MODEL.WEIGHTS
    if random_weights:
        if weights:
            logger.warning(f"--random-weights: not loading MODEL.WEIGHTS={weights}")
        cfg.MODEL.WEIGHTS = ""  # MaskFormerPredictor warns that the model is untrained
        return
    if not weights:
        if config_file == QUICKSTART_CONFIG.resolve() and QUICKSTART_WEIGHTS.is_file():
            cfg.MODEL.WEIGHTS = str(QUICKSTART_WEIGHTS)
            logger.info(f"Using the quick-start model {QUICKSTART_WEIGHTS} "
                        "(MODEL.WEIGHTS is empty in the config)")
        else:
            raise UserError("No model weights: MODEL.WEIGHTS is empty. " + NO_WEIGHTS_ADVICE)
    check_weights(cfg.MODEL.WEIGHTS, advice=NO_WEIGHTS_ADVICE)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().strip("'\"") or type(error).__name__
    return " ".join(text.split())


# ---------------------------------------------------------------- inputs and outputs

def image_extensions() -> set:
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def collect_images(items: List[str]) -> Tuple[List[str], List[str], bool]:
    """Expands --input into image paths.

    Returns (paths, problems, several): directories give their image files (by extension),
    patterns their matches; `problems` are one-line messages for items that gave nothing;
    `several` is whether the inputs name a collection (then --output is a directory).
    """
    extensions = image_extensions()
    paths, problems = [], []
    several = len(items) > 1
    for item in items:
        expanded = os.path.expanduser(item)
        if os.path.isdir(expanded):
            several = True
            found = sorted(
                os.path.join(expanded, name) for name in os.listdir(expanded)
                if os.path.splitext(name)[1].lower() in extensions
                and os.path.isfile(os.path.join(expanded, name))
            )
            if not found:
                problems.append(f"{item}: no image files in this directory")
        elif os.path.exists(expanded):
            found = [expanded]
        elif any(c in expanded for c in "*?["):  # a pattern the shell did not expand
            several = True
            found = sorted(p for p in glob.glob(expanded) if os.path.isfile(p))
            if not found:
                problems.append(f"{item}: no files match this pattern")
        else:
            found = []
            problems.append(f"{item}: no such file or directory")
        paths.extend(p for p in found if p not in paths)
    return paths, problems, several or len(paths) > 1


def image_outputs(paths: List[str], output: str, several: bool) -> List[str]:
    """One output file per input: `output` itself, or files named after the inputs in it."""
    as_directory = several or os.path.isdir(output) or output.endswith(("/", os.sep))
    if not as_directory:
        if not cv2.haveImageWriter(output):
            raise UserError(f"--output {output}: cannot write images of this type; "
                            "use a name ending in .png or .jpg, or a directory")
        check_output_folder(output, os.path.dirname(os.path.abspath(output)))
        return [output]
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"--output {output} is a file; with several inputs pass a directory")
    check_output_folder(output, output)
    outputs, used = [], set()
    for path in paths:
        stem, ext = os.path.splitext(os.path.basename(path))
        if not cv2.haveImageWriter("x" + ext):
            ext = ".png"
        name, n = stem + ext, 1
        while name in used:  # inputs of the same name from different directories
            name, n = f"{stem}_{n}{ext}", n + 1
        used.add(name)
        outputs.append(os.path.join(output, name))
    return outputs


def folder_write_problem(folder: str) -> Optional[str]:
    """Why files cannot be created in `folder` (created if missing), or None if they can.

    Tried by creating a temporary file, since permission bits do not tell: root may write in a
    folder without write permission, nobody may write on a read-only file system.
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        return "it is a file"
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return error.strerror or _one_line(error)
    return None


def check_output_folder(output: str, folder: str) -> None:
    """Refuses --output `output` where its `folder` cannot be created or written in."""
    problem = folder_write_problem(folder)
    if problem is not None:
        raise UserError(f"--output {output}: cannot write in the folder {folder} ({problem})")


def display_problem() -> Optional[str]:
    """Why cv2.imshow cannot open a window here, or None if it can."""
    gui = [line for line in cv2.getBuildInformation().splitlines()
           if line.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() == "NONE":
        return ("the installed OpenCV is headless (opencv-python-headless, as setup.py installs: "
                "built without GUI support), so it cannot open windows")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    return None


def write_image(path: str, bgr) -> None:
    ok, encoded = cv2.imencode(os.path.splitext(path)[1] or ".png", bgr)
    if not ok:
        raise UserError(f"{path}: cannot encode the image")
    try:
        Path(path).write_bytes(encoded.tobytes())
    except OSError as error:
        raise UserError(f"--output: cannot write {path} ({error.strerror or _one_line(error)})"
                        ) from None


def same_file(a: str, b: str) -> bool:
    return os.path.exists(b) and os.path.samefile(a, b)


# ---------------------------------------------------------------- the three sources

def run_on_images(args, demo_factory) -> int:
    paths, problems, several = collect_images(args.input)
    if not paths:
        raise UserError("; ".join(problems))
    for problem in problems:
        logger.warning(f"{problem}: skipped")
    outputs = image_outputs(paths, args.output, several) if args.output else [None] * len(paths)
    preloaded = None
    if len(paths) == 1:
        # One image is checked before the model is built, and its problem is the error.
        if outputs[0] is not None and same_file(paths[0], outputs[0]):
            raise UserError(f"--output {outputs[0]} would overwrite the input")
        try:
            preloaded = load_image(paths[0])
        except (ValueError, OSError) as error:
            raise UserError(_one_line(error)) from None
    demo = demo_factory()
    try:
        done, skipped = process_images(demo, paths, outputs, preloaded, skipped=len(problems))
    finally:
        demo.close()
    if done == 0:
        logger.error(f"None of the {len(paths)} images could be processed")
        return 1
    if skipped:
        logger.warning(f"Processed {done} image(s); skipped {skipped} input(s), "
                       "see the warnings above")
    return 0


def process_images(demo, paths, outputs, preloaded, skipped: int) -> Tuple[int, int]:
    """Predicts, draws and saves or shows each image; returns (processed, skipped) counts."""
    done = 0
    for path, out in zip(tqdm.tqdm(paths, desc="images", unit="image", disable=len(paths) < 2),
                         outputs):
        if out is not None and same_file(path, out):
            logger.warning(f"{path}: the output would overwrite the input: skipped")
            skipped += 1
            continue
        try:
            image = preloaded if preloaded is not None else load_image(path)
        except (ValueError, OSError) as error:
            logger.warning(f"{_one_line(error)}: skipped")
            skipped += 1
            continue
        start = time.perf_counter()
        predictions, vis_output = demo.run_on_image(image, name=path)
        logger.info(f"{path}: {demo.describe(predictions)} in {time.perf_counter() - start:.2f}s")
        done += 1
        drawing = vis_output.get_image()[:, :, ::-1]
        if out is not None:
            write_image(out, drawing)
            logger.info(f"Saved {out}")
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, drawing)
            if cv2.waitKey(0) == ESC:
                break
    return done, skipped


def video_output_path(output: str, source_name: str, input_path: Optional[str]) -> str:
    """The video file to write: `output`, or <source_name>.mp4 in the directory `output`."""
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        output = os.path.join(output, Path(source_name).stem + ".mp4")
    ext = os.path.splitext(output)[1].lower()
    if ext not in VIDEO_CODECS:
        raise UserError(f"--output {output}: not a video file name; use one ending in "
                        + ", ".join(sorted(VIDEO_CODECS)) + ", or a directory")
    if input_path is not None and same_file(input_path, output):
        raise UserError(f"--output {output} would overwrite the input video")
    check_output_folder(output, os.path.dirname(os.path.abspath(output)))
    return output


def open_video_writer(output: str, fps: float, size: Tuple[int, int]) -> cv2.VideoWriter:
    """A writer of (width, height) = `size` frames; its folder was checked by video_output_path."""
    ext = os.path.splitext(output)[1].lower()
    writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*VIDEO_CODECS[ext]), fps, size)
    if not writer.isOpened():
        raise UserError(f"--output {output}: OpenCV cannot write {ext} video here"
                        + ("; try .avi" if ext != ".avi" else ""))
    return writer


def run_on_stream(args, demo_factory, video: cv2.VideoCapture, name: str,
                  input_path: Optional[str] = None) -> int:
    """Draws every readable frame of an opened video or camera; to a file, or in a window (ESC
    stops). Unreadable frames of a file are skipped (VideoFrames) and counted at the end."""
    fps = video.get(cv2.CAP_PROP_FPS)
    if not fps or fps != fps or fps <= 0:  # cameras and some files report 0 or NaN
        fps = 25.0
    output = video_output_path(args.output, name, input_path) if args.output else None
    frames = VideoFrames(video, name)
    demo = demo_factory()
    writer = None
    done, start = 0, time.perf_counter()
    try:
        for vis_frame in tqdm.tqdm(demo.run_on_video(frames), total=frames.total, desc="frames",
                                   unit="frame"):
            if output is not None:
                if writer is None:  # the drawings' size: frames too large are downscaled
                    writer = open_video_writer(output, fps, vis_frame.shape[1::-1])
                writer.write(vis_frame)
            else:
                cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
                cv2.imshow(WINDOW_NAME, vis_frame)
            done += 1
            if output is None and cv2.waitKey(1) == ESC:
                break
    except KeyboardInterrupt:
        logger.warning(f"Interrupted after {done} frames")
    finally:
        demo.close()
        video.release()
        if writer is not None:
            writer.release()
        elif done:
            cv2.destroyAllWindows()
    if done == 0:
        raise UserError(f"{name}: no frames could be read")
    elapsed = time.perf_counter() - start
    counts = f"{done} of {frames.total}" if frames.total else f"{done}"
    counts += " frames " + ("written" if output else "shown")
    if frames.skipped:
        counts += f", {frames.skipped} unreadable skipped"
    if frames.unread:
        counts += f", {frames.unread} not read"
    log = logger.warning if frames.skipped else logger.info
    log(f"{name}: {counts} in {elapsed:.1f}s ({done / elapsed:.1f} frames/s)"
        + (f"; saved {output}" if output else ""))
    return 0


def open_video(path: str) -> cv2.VideoCapture:
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory, not a video")
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise UserError(f"{path}: not a video, or a format OpenCV cannot read")
    return video


# ---------------------------------------------------------------- entry point

class _TqdmStderrHandler(logging.Handler):
    """Writes to the current sys.stderr through tqdm, so that messages keep progress bars whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def configure_logging(loggers=("mask_former_demo",)) -> None:
    """Sends the demo's messages (and those of `loggers`) to stderr; safe to call repeatedly."""
    for name in loggers:
        target = logging.getLogger(name)
        target.setLevel(logging.INFO)
        # By name: a second copy of this module (tests load it more than once) has its own class.
        if not any(type(h).__name__ == _TqdmStderrHandler.__name__ for h in target.handlers):
            handler = _TqdmStderrHandler()
            handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s",
                                                   datefmt="%H:%M:%S"))
            target.addHandler(handler)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the demo with command-line arguments `argv`; returns the exit status."""
    args = get_parser().parse_args(argv)
    configure_logging()
    try:
        return run(args)
    except UserError as error:
        logger.error(str(error))
        return 1
    except KeyboardInterrupt:
        logger.warning("Interrupted")
        return 130


def onnx_demo(cfg, args: argparse.Namespace) -> VisualizationDemo:
    """The demo on onnxruntime (--onnx): the config's pre- and post-processing, no torch model."""
    if args.parallel:
        raise UserError("--parallel runs torch models in worker processes; not with --onnx")
    return VisualizationDemo(cfg, scale=args.scale, max_memory_gb=args.max_memory, onnx=args.onnx)


def run(args: argparse.Namespace) -> int:
    # What the user may have got wrong is checked before the model is built: the display and the
    # inputs first, then (in demo_factory) the config and the weights.
    if args.output is None:
        problem = display_problem()
        if problem is not None:
            raise UserError(f"Cannot show the results in a window: {problem}. Pass --output FILE "
                            "for one image or a video, or --output DIR for several images")

    def demo_factory() -> VisualizationDemo:
        cfg = setup_cfg(args)
        weights = args.onnx or cfg.MODEL.WEIGHTS or "(random)"
        logger.info(f"Config {args.config_file}, weights {weights}, device {cfg.MODEL.DEVICE}")
        if args.onnx is not None:
            return onnx_demo(cfg, args)
        return VisualizationDemo(cfg, parallel=args.parallel, scale=args.scale,
                                 max_memory_gb=args.max_memory)

    if args.input:
        return run_on_images(args, demo_factory)
    if args.scale != 1.0:
        raise UserError("--scale applies to --input images only; video frames are drawn at "
                        "their own size")
    if args.video_input:
        video = open_video(args.video_input)
        return run_on_stream(args, demo_factory, video, os.path.basename(args.video_input),
                             input_path=args.video_input)
    camera = cv2.VideoCapture(0)
    if not camera.isOpened():
        raise UserError("--webcam: cannot open camera 0")
    return run_on_stream(args, demo_factory, camera, "webcam")


if __name__ == "__main__":
    configure_logging(("mask_former_demo", "detectron2", "fvcore", "mask_former"))
    sys.exit(main())
