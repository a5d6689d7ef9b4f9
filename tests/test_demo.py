"""demo/demo.py and demo/predictor.py on the quick-start model, untrained (CPU, no training).

Each run of the demo goes through its `main(argv)`, as `python demo/demo.py ARGS` does.
"""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from PIL import Image

from conftest import REPO_ROOT
from helpers import load_script
from mask_former import add_mask_former_config

QUICKSTART_CONFIG = REPO_ROOT / "configs" / "quickstart" / "maskformer_tiny_shapes.yaml"


demo = load_script(REPO_ROOT / "demo" / "demo.py", "maskformer_demo")  # puts demo/ on sys.path
import predictor  # noqa: E402  (demo/predictor.py)


def quickstart_cfg(**overrides):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.merge_from_file(str(QUICKSTART_CONFIG))
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An untrained quick-start checkpoint whose class biases favour "sky" and "circle" over
    "no object", so that panoptic inference finds segments."""
    torch.manual_seed(0)
    model = build_model(quickstart_cfg())
    with torch.no_grad():
        bias = model.sem_seg_head.predictor.class_embed.bias
        bias.zero_()
        bias[0] = bias[2] = 4.0
    folder = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(model, save_dir=str(folder)).save("untrained")
    return str(folder / "untrained.pth")


@pytest.fixture(autouse=True)
def no_quickstart_model(monkeypatch, tmp_path):
    """Tests see no output/quickstart/model_final.pth, whether or not this checkout has one."""
    monkeypatch.setattr(demo, "QUICKSTART_WEIGHTS", tmp_path / "no_quickstart_model.pth")


def run_demo(capsys, *args, weights=None):
    """Runs the demo; returns (exit status, what it wrote to stderr)."""
    argv = list(args)
    if weights is not None:
        argv += ["--opts", "MODEL.WEIGHTS", weights]
    status = demo.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def error_message(err):
    """The one error the demo logged, without the time stamp."""
    errors = [line.split(" ERROR] ", 1)[1] for line in err.splitlines() if " ERROR] " in line]
    assert len(errors) == 1, err
    return errors[0]


def write_image(path, height=48, width=80, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), image)
    return path


def read_shape(path):
    image = cv2.imread(str(path))
    assert image is not None, f"{path} was not written"
    return image.shape


# ------------------------------------------------------------------ images

def test_single_image_gives_an_overlay_of_its_size(tmp_path, capsys, weights):
    source = write_image(tmp_path / "photo.png", 60, 90)
    out = tmp_path / "result.png"
    status, err = run_demo(capsys, "--input", str(source), "--output", str(out), weights=weights)
    assert status == 0
    assert read_shape(out) == (60, 90, 3)
    assert "photo.png:" in err and "s\n" in err  # the image's time is logged


def test_semantic_config_draws_class_overlay(tmp_path, capsys, weights):
    source = write_image(tmp_path / "photo.png")
    out = tmp_path / "semantic.png"
    status, err = run_demo(capsys, "--input", str(source), "--output", str(out), "--opts",
                           "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", "MODEL.WEIGHTS", weights)
    assert status == 0
    assert "classes: " in err
    assert not np.array_equal(cv2.imread(str(out)), cv2.imread(str(source)))


def test_panoptic_config_draws_segments(tmp_path, capsys, weights):
    source = write_image(tmp_path / "photo.png")
    out = tmp_path / "panoptic.png"
    status, err = run_demo(capsys, "--input", str(source), "--output", str(out),
                           "--confidence-threshold", "0.0", weights=weights)
    assert status == 0
    assert re.search(r"photo.png: [1-9]\d* segments? \(", err)
    assert not np.array_equal(cv2.imread(str(out)), cv2.imread(str(source)))


def test_panoptic_drawing_outlines_and_labels_stuff_and_things(weights):
    """The drawing of a known panoptic result: a "sky" stuff segment and a "circle" thing."""
    vis_demo = predictor.VisualizationDemo(quickstart_cfg(**{"MODEL.WEIGHTS": weights}))
    segments = torch.zeros((60, 80), dtype=torch.int32)
    segments[:30] = 1
    segments[35:55, 10:30] = 2
    info = [{"id": 1, "isthing": False, "category_id": 0},
            {"id": 2, "isthing": True, "category_id": 2}]
    vis_demo.predictor = lambda image: {"sem_seg": torch.zeros(5, 60, 80),
                                        "panoptic_seg": (segments, info)}
    image = np.full((60, 80, 3), 100, np.uint8)
    predictions, vis_output = vis_demo.run_on_image(image)
    drawing = vis_output.get_image()
    assert drawing.shape == (60, 80, 3)
    assert vis_demo.describe(predictions) == "2 segments (sky, circle)"
    changed = np.abs(drawing.astype(int) - 100).sum(-1) > 0
    assert changed[:30].mean() > 0.9 and changed[35:55, 10:30].mean() > 0.9
    assert changed[58:, 60:].mean() < 0.1  # no segment there


def test_scale_enlarges_the_drawing(tmp_path, capsys, weights):
    source = write_image(tmp_path / "small.png", 30, 40)
    out = tmp_path / "big.png"
    status, _ = run_demo(capsys, "--input", str(source), "--output", str(out), "--scale", "3",
                         weights=weights)
    assert status == 0 and read_shape(out) == (90, 120, 3)


def test_random_weights_run_without_a_checkpoint(tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    out = tmp_path / "out.jpg"
    status, err = run_demo(capsys, "--input", str(source), "--output", str(out), "--random-weights")
    assert status == 0 and "randomly initialised" in err
    assert read_shape(out) == (48, 80, 3)


def test_directory_of_inputs_gives_directory_of_outputs(tmp_path, capsys, weights):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    sizes = {"a.png": (40, 64), "b.jpg": (72, 56), "c.png": (50, 50)}
    for seed, (name, (height, width)) in enumerate(sizes.items()):
        write_image(inputs / name, height, width, seed)
    (inputs / "notes.txt").write_text("not an image")  # directories give their images only
    outputs = tmp_path / "outputs"
    status, err = run_demo(capsys, "--input", str(inputs), "--output", str(outputs),
                           weights=weights)
    assert status == 0
    assert sorted(p.name for p in outputs.iterdir()) == sorted(sizes)
    for name, (height, width) in sizes.items():
        assert read_shape(outputs / name)[:2] == (height, width)


def test_bad_input_among_many_is_skipped(tmp_path, capsys, weights):
    good = write_image(tmp_path / "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is not a JPEG")
    outputs = tmp_path / "outputs"
    status, err = run_demo(capsys, "--input", str(bad), str(good), str(tmp_path / "missing.png"),
                           "--output", str(outputs), weights=weights)
    assert status == 0
    assert "bad.jpg: not an image" in err and "missing.png: no such file" in err
    assert [p.name for p in outputs.iterdir()] == ["good.png"]


@pytest.mark.parametrize("name, content, message", [
    ("missing.png", None, "missing.png: no such file or directory"),
    ("fake.jpg", b"plain text, no pixels", "fake.jpg: not an image"),
    ("empty.png", b"", "empty.png: not an image"),
    ("zero.ppm", b"P6\n0 5\n255\n", "zero.ppm: not an image"),  # Pillow refuses 0 pixels
])
def test_unusable_single_input_is_refused_in_one_line(tmp_path, capsys, weights, name, content,
                                                      message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    status, err = run_demo(capsys, "--input", str(path), "--output", str(tmp_path / "out.png"),
                           weights=weights)
    assert status == 1
    assert message in err
    assert len([line for line in err.splitlines() if "ERROR" in line]) == 1


def _grayscale(path):
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))).save(path)


def _rgba(path):
    rgba = np.zeros((32, 64, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 32:, 3] = 255  # left half transparent
    Image.fromarray(rgba, "RGBA").save(path)


def _sixteen_bit(path):
    Image.fromarray((np.arange(32 * 64).reshape(32, 64) * 32).astype(np.uint16)).save(path)


@pytest.mark.parametrize("make, message", [
    (_grayscale, "grayscale image converted to 3 channels"),
    (_rgba, "transparency composited on white"),
    (_sixteen_bit, "16-bit samples scaled to 8 bits"),
])
def test_unusual_images_are_converted(tmp_path, capsys, weights, make, message):
    path = tmp_path / "unusual.png"
    make(path)
    out = tmp_path / "out.png"
    status, err = run_demo(capsys, "--input", str(path), "--output", str(out), weights=weights)
    assert status == 0 and message in err
    assert read_shape(out) == (32, 64, 3)


def test_image_too_large_for_max_memory_is_downscaled(tmp_path, capsys, weights):
    source = write_image(tmp_path / "photo.png", 60, 90)
    out = tmp_path / "out.png"
    # The quick-start config's 5 classes and 16 queries (panoptic): 4 * (2 * 5 + 6 * 16) + 256
    # bytes a pixel, so 0.001 GB holds 1470 pixels.
    status, err = run_demo(capsys, "--input", str(source), "--output", str(out),
                           "--max-memory", "0.001", weights=weights)
    assert status == 0
    assert (f"WARNING] {source}: 90x60 downscaled to 46x31: the results for 5 classes and 16 "
            "queries take about 680 bytes a pixel, and the memory limit is 0.001 GB "
            "(demo.py: --max-memory)\n") in err
    assert read_shape(out) == (31, 46, 3)


def test_memory_cap_follows_classes_and_queries():
    """An 8000x6000 photo with a 150-class, 100-query config fits in the default 4 GB."""
    ade = quickstart_cfg(**{"MODEL.SEM_SEG_HEAD.NUM_CLASSES": 150,
                            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100})
    memory = predictor.OutputMemory.from_config(ade)
    assert memory.bytes_per_pixel == 4 * (2 * 150 + 6 * 100) + 256
    assert memory.max_pixels == 1_037_344
    assert predictor.fitted_size(6000, 8000, memory.max_pixels) == (882, 1176)
    ade.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False  # no (Q, H, W) masks at the output size
    memory = predictor.OutputMemory.from_config(ade, max_memory_gb=16)
    assert (memory.bytes_per_pixel, memory.max_pixels) == (4 * 2 * 150 + 256, 10_989_010)
    assert predictor.fitted_size(1, 100_000, 50) == (1, 50)  # a sliver stays within the limit


def test_exif_rotated_jpeg_is_upright(tmp_path, capsys, weights):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; display rotated 90 degrees clockwise
    Image.new("RGB", (80, 40), (30, 120, 200)).save(path, exif=exif.tobytes())
    out = tmp_path / "out.png"
    status, _ = run_demo(capsys, "--input", str(path), "--output", str(out), weights=weights)
    assert status == 0
    assert read_shape(out)[:2] == (80, 40)  # (height, width) of the upright image


# ------------------------------------------------------------------ load_image

def test_load_image_normalises_what_people_feed_it(tmp_path):
    _sixteen_bit(tmp_path / "deep.png")
    deep = predictor.load_image(tmp_path / "deep.png")
    assert deep.dtype == np.uint8 and deep.shape == (32, 64, 3)
    assert deep.max() > 200  # 16-bit values scaled, not clipped or truncated to the low byte
    _rgba(tmp_path / "alpha.png")
    alpha = predictor.load_image(tmp_path / "alpha.png")
    assert (alpha[0, 0] == 255).all()  # transparent -> white
    assert tuple(alpha[0, 63]) == (0, 0, 200)  # opaque red, in BGR


def test_load_image_downscales_huge_images_and_refuses_bombs(tmp_path, monkeypatch, caplog):
    write_image(tmp_path / "big.png", 200, 300)
    image = predictor.load_image(tmp_path / "big.png", max_pixels=6000)
    assert image.shape[0] * image.shape[1] <= 6000 and image.shape[1] > image.shape[0]
    assert "downscaled" in caplog.text
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 200x300 > 2x the limit: a "bomb"
    with pytest.raises(ValueError, match="big.png: too large to decode safely"):
        predictor.load_image(tmp_path / "big.png")


def test_load_image_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        predictor.load_image(tmp_path / "nothing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="text.png: not an image"):
        predictor.load_image(tmp_path / "text.png")


# ------------------------------------------------------------------ video

def write_video(path, frames=5, size=(96, 64)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, size)
    for seed in range(frames):
        writer.write(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3),
                                                          dtype=np.uint8))
    writer.release()
    return path


def corrupt_frames(path, frames):
    """Zeroes part of the JPEG data of the given (0-based) frames of an MJPG video."""
    data = bytearray(path.read_bytes())
    starts, position = [], data.find(b"\xff\xd8\xff")
    while position >= 0:
        starts.append(position)
        position = data.find(b"\xff\xd8\xff", position + 1)
    for frame in frames:
        data[starts[frame] + 200:starts[frame] + 1200] = bytes(1000)
    path.write_bytes(bytes(data))


def read_frame_shapes(path):
    video = cv2.VideoCapture(str(path))
    shapes = []
    while True:
        ok, frame = video.read()
        if not ok:
            return shapes
        shapes.append(frame.shape)


@pytest.mark.parametrize("parallel", [False, True], ids=["in_process", "parallel"])
def test_video_gives_a_video_of_as_many_frames(tmp_path, capsys, weights, parallel):
    source = write_video(tmp_path / "clip.avi")
    out = tmp_path / "clip_seg.mp4"
    flags = ["--parallel"] if parallel else []  # one worker process on the CPU
    status, err = run_demo(capsys, "--video-input", str(source), "--output", str(out), *flags,
                           weights=weights)
    assert status == 0 and "5 frames" in err
    assert read_frame_shapes(out) == [(64, 96, 3)] * 5


def test_corrupt_frames_are_skipped_and_counted(tmp_path, capsys, weights):
    source = write_video(tmp_path / "clip.avi", frames=8)
    corrupt_frames(source, [2, 3, 5])
    out = tmp_path / "clip_seg.avi"
    status, err = run_demo(capsys, "--video-input", str(source), "--output", str(out),
                           weights=weights)
    assert status == 0
    assert "WARNING] clip.avi: frames 3-4 of 8 unreadable: skipped\n" in err
    assert "WARNING] clip.avi: frame 6 of 8 unreadable: skipped\n" in err
    assert re.search(r"WARNING\] clip.avi: 5 of 8 frames written, 3 unreadable skipped in "
                     rf"[\d.]+s \([\d.]+ frames/s\); saved {re.escape(str(out))}\n", err)
    assert read_frame_shapes(out) == [(64, 96, 3)] * 5


def test_reading_stops_after_too_many_unreadable_frames(tmp_path, caplog):
    source = write_video(tmp_path / "clip.avi", frames=12)
    corrupt_frames(source, [4, 5, 6, 7, 8])
    frames = predictor.VideoFrames(cv2.VideoCapture(str(source)), "clip.avi",
                                   max_unreadable_run=3)
    assert len(list(frames)) == 4
    assert (frames.read, frames.skipped, frames.unread, frames.total) == (4, 3, 5, 12)
    assert caplog.messages[-1] == ("clip.avi: frames 5-7 of 12 unreadable: 3 in a row: stopped "
                                   "reading, the remaining 5 frames were not read")


def test_frames_too_large_for_max_memory_are_downscaled(tmp_path, capsys, weights):
    source = write_video(tmp_path / "clip.avi", frames=2)
    out = tmp_path / "clip_seg.avi"
    status, err = run_demo(capsys, "--video-input", str(source), "--output", str(out),
                           "--max-memory", "0.002", weights=weights)
    assert status == 0
    assert err.count("downscaled") == 1  # one warning for the video
    assert "clip.avi: 96x64 downscaled to 66x44: " in err
    assert read_frame_shapes(out) == [(44, 66, 3)] * 2


def test_unreadable_video_is_refused(tmp_path, capsys, weights):
    source = tmp_path / "clip.mp4"
    source.write_text("not a video")
    status, err = run_demo(capsys, "--video-input", str(source), "--output",
                           str(tmp_path / "out.mp4"), weights=weights)
    assert status == 1 and "clip.mp4: not a video" in err


# ------------------------------------------------------------------ weights and display

def test_no_weights_is_refused_with_advice(tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    status, err = run_demo(capsys, "--input", str(source), "--output", str(tmp_path / "out.png"))
    assert status == 1
    assert "tools/quickstart.sh" in err and "MODEL.WEIGHTS" in err and "--random-weights" in err
    assert not (tmp_path / "out.png").exists()


def test_quickstart_model_is_the_default(tmp_path, capsys, monkeypatch, weights):
    monkeypatch.setattr(demo, "QUICKSTART_WEIGHTS", Path(weights))
    source = write_image(tmp_path / "photo.png")
    status, err = run_demo(capsys, "--input", str(source), "--output", str(tmp_path / "out.png"))
    assert status == 0 and "Using the quick-start model" in err


@pytest.mark.parametrize("parallel", [False, True],
                         ids=["in_process", "parallel"])
def test_backbone_only_checkpoint_is_refused(tmp_path, capsys, parallel):
    checkpoint = tmp_path / "R-50.pth"
    model = build_model(quickstart_cfg())
    torch.save({"model": {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}},
               checkpoint)
    source = write_image(tmp_path / "photo.png")
    flags = ["--parallel"] if parallel else []  # the error comes from the worker process
    status, err = run_demo(capsys, "--input", str(source), "--output", str(tmp_path / "out.png"),
                           *flags, weights=str(checkpoint))
    assert status == 1
    errors = [line.split("ERROR] ", 1)[1] for line in err.splitlines() if "ERROR] " in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"{checkpoint} does not fit the model of this config: 318 of the "
                                "model's 409 weights loaded; 91 are not in the checkpoint "
                                "(sem_seg_head.pixel_decoder.adapter_1.weight, ")
    assert errors[0].endswith(
        "It holds no segmentation head (sem_seg_head.*) weights: backbone weights are a starting "
        "point for training, not a segmentation model. Use the config the weights were trained "
        "with, or weights trained with this one.")


def test_missing_checkpoint_is_refused(tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    status, err = run_demo(capsys, "--input", str(source), "--output", str(tmp_path / "out.png"),
                           weights=str(tmp_path / "nothing.pth"))
    assert status == 1 and "nothing.pth: no such file" in err


@pytest.mark.parametrize("gui, display, problem", [
    ("NONE", ":0", "the installed OpenCV is headless (opencv-python-headless, as setup.py "
                   "installs: built without GUI support), so it cannot open windows"),
    ("GTK3", None, "there is no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"),
], ids=["headless_opencv", "no_display"])
def test_without_a_window_asks_for_output(tmp_path, capsys, monkeypatch, gui, display, problem):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: f"  GUI:          {gui}\n")
    monkeypatch.setattr(demo.sys, "platform", "linux")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if display is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", display)
    source = write_image(tmp_path / "photo.png")
    status, err = run_demo(capsys, "--input", str(source), "--random-weights")
    assert status == 1
    assert error_message(err) == (f"Cannot show the results in a window: {problem}. Pass "
                                  "--output FILE for one image or a video, or --output DIR for "
                                  "several images")


@pytest.fixture(params=["chmod_500", "sysfs"])
def read_only_folder(request, tmp_path):
    """A folder in which files cannot be created: one without write permission (which root may
    write in all the same), or Linux's /sys (in which not even root can create files)."""
    if request.param == "sysfs":
        folder = Path("/sys")
    else:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o500)
        request.addfinalizer(lambda: folder.chmod(0o700))
    if not folder.is_dir() or demo.folder_write_problem(str(folder)) is None:
        pytest.skip(f"files can be created in {folder} here (running as root?)")
    return folder


@pytest.mark.parametrize("source", ["image", "video"])
def test_read_only_output_folder_is_named(tmp_path, capsys, read_only_folder, source):
    if source == "image":
        flags = ["--input", str(write_image(tmp_path / "photo.png"))]
        out = read_only_folder / "out.png"
    else:
        flags = ["--video-input", str(write_video(tmp_path / "clip.avi", frames=1))]
        out = read_only_folder / "out.mp4"
    status, err = run_demo(capsys, *flags, "--random-weights", "--output", str(out))
    assert status == 1
    assert error_message(err) == (f"--output {out}: cannot write in the folder "
                                  f"{read_only_folder} (Permission denied)")


@pytest.mark.parametrize("below, problem", [("photo.png", "it is a file"),
                                            ("photo.png/results", "Not a directory")])
def test_output_folder_that_cannot_be_made_is_named(tmp_path, capsys, below, problem):
    source = write_image(tmp_path / "photo.png")
    folder = tmp_path / below
    out = folder / "out.png"
    status, err = run_demo(capsys, "--input", str(source), "--output", str(out),
                           "--random-weights")
    assert status == 1
    assert error_message(err) == f"--output {out}: cannot write in the folder {folder} ({problem})"


def test_config_file_is_found_from_any_directory(tmp_path, capsys, monkeypatch, weights):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "photo.png")
    status, _ = run_demo(capsys, "--config-file", "configs/quickstart/maskformer_tiny_shapes.yaml",
                         "--input", "photo.png", "--output", "out.png", weights=weights)
    assert status == 0 and (tmp_path / "out.png").is_file()


# ------------------------------------------------------------------ Python API

def test_predictor_returns_semantic_and_panoptic_results(weights):
    cfg = quickstart_cfg(**{"MODEL.WEIGHTS": weights})
    model = predictor.MaskFormerPredictor(cfg)
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    outputs = model(image)
    assert outputs["sem_seg"].shape == (5, 50, 70)
    segments, info = outputs["panoptic_seg"]
    assert segments.shape == (50, 70)
    assert all({"id", "isthing", "category_id"} <= set(s) for s in info)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 BGR image"):
        model(image[:, :, 0])


def test_predictor_refuses_empty_and_too_large_images(weights):
    model = predictor.MaskFormerPredictor(quickstart_cfg(**{"MODEL.WEIGHTS": weights}),
                                          max_memory_gb=0.001)
    for shape in [(0, 0, 3), (0, 5, 3)]:
        with pytest.raises(predictor.ImageError) as error:
            model(np.zeros(shape, np.uint8))
        assert str(error.value) == (f"MaskFormerPredictor got an empty image: shape {shape} has "
                                    "no pixels")
    with pytest.raises(ValueError) as error:  # an ImageError is a ValueError
        model(np.zeros((50, 70, 3), np.uint8))
    assert str(error.value) == ("MaskFormerPredictor: the results for a 70x50 image would take "
                                "about 0.00238 GB, over max_memory_gb=0.001; downscale it to "
                                "45x32 or less first, or pass a larger max_memory_gb")
    assert model(np.zeros((30, 45, 3), np.uint8))["sem_seg"].shape == (5, 30, 45)
