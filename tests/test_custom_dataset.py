"""Datasets of your own (docs/custom_datasets.md): a semantic-segmentation folder given by
DATASETS.CUSTOM_ROOT (registration, NUM_CLASSES from classes.txt, one-line errors,
tools/check_dataset.py, train_net and the demo on it), and the doc's snippets that register
COCO-format instance and panoptic data, run on tiny datasets and trained for a couple of steps."""
import json
import math
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from PIL import Image

from conftest import REPO_ROOT
from helpers import doc_block, load_script, temporary_names
from mask_former.config import load_config
from mask_former.data import build_train_loader
from mask_former.data.datasets.register_custom import CUSTOM_DATASETS
from mask_former.data.io import DataError, id_to_rgb
from mask_former.data.metadata_file import MetadataFileError
from mask_former.errors import ConfigError
from tiny_models import TINY_MODEL_OPTS

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402

MASKFORMER = "configs/custom/maskformer_R50.yaml"
MASK2FORMER = "configs/custom/mask2former_R50.yaml"
CLASSES = ["sky", "road", "car"]
COLORS = [(70, 130, 180), (128, 64, 128), (0, 0, 142)]
SIZE = 64
DOC = REPO_ROOT / "docs" / "custom_datasets.md"
# The configs at the quick-start model's width, on 64x64 images, on the CPU.
TINY_OPTS = TINY_MODEL_OPTS + [
    "MODEL.DEVICE", "cpu", "SEED", "0", "SOLVER.IMS_PER_BATCH", "2",
    "INPUT.MIN_SIZE_TRAIN", f"({SIZE},)", "INPUT.MAX_SIZE_TRAIN", str(SIZE),
    "INPUT.CROP.SIZE", f"({SIZE}, {SIZE})", "INPUT.SIZE_DIVISIBILITY", str(SIZE),
    "INPUT.MIN_SIZE_TEST", str(SIZE), "INPUT.MAX_SIZE_TEST", str(SIZE),
    "DATALOADER.NUM_WORKERS", "0",
]
# ... and Mask2Former's parts at that width: one encoder layer, fewer sampled points.
TINY_MASK2FORMER_OPTS = TINY_OPTS + [
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
]

demo = load_script(REPO_ROOT / "demo" / "demo.py", "maskformer_demo")  # puts demo/ on sys.path
import predictor  # noqa: E402  (demo/predictor.py)


@pytest.fixture(autouse=True)
def forget_custom_datasets():
    """Each test registers the custom names anew (with its own folder); none is left behind."""
    with temporary_names(*CUSTOM_DATASETS.values()):
        yield


def label_map(index: int, dtype=np.uint8) -> np.ndarray:
    """Sky above road, a car on the road, an ignored band at the top; shifted by `index`."""
    label = np.zeros((SIZE, SIZE), dtype)
    label[24 + index:] = 1
    label[40:56, 8 + 4 * index:32 + 4 * index] = 2
    label[:2] = 255
    return label


def write_custom_root(root: Path, splits=(("train", 3), ("val", 2)), colors=True,
                      dtype=np.uint8) -> Path:
    """A dataset folder of the documented layout: 3 classes, 64x64 images (.jpg and .png)."""
    rng = np.random.default_rng(0)
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    if colors:
        (root / "colors.txt").write_text("".join(f"{r} {g} {b}\n" for r, g, b in COLORS))
    for split, count in splits:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index in range(count):
            label = label_map(index, dtype)
            image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
            image[label == 1] += 120  # classes that can be told apart
            image[label == 2] += 190
            extension = ".jpg" if index % 2 == 0 else ".png"
            Image.fromarray(image).save(root / "images" / split / f"{split}_{index}{extension}")
            Image.fromarray(label).save(root / "labels" / split / f"{split}_{index}.png")
    return root


def custom_config(root, config=MASKFORMER, *opts):
    return load_config(config, ["DATASETS.CUSTOM_ROOT", str(root)] + list(opts))


def train_net_error(capsys, *argv) -> str:
    """train_net.py's one error line for `argv` (it must exit with status 1)."""
    assert train_net.cli(list(argv)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("train_net.py")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("train_net.py: error: ")


# ---------------------------------------------------------------- registration


@pytest.mark.parametrize("config", [MASKFORMER, MASK2FORMER])
def test_root_registers_both_splits_and_sets_num_classes(tmp_path, config):
    root = write_custom_root(tmp_path / "data", dtype=np.uint16)
    cfg = custom_config(root, config)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 3
    assert tuple(cfg.DATASETS.TRAIN) == ("custom_sem_seg_train",)
    assert tuple(cfg.DATASETS.TEST) == ("custom_sem_seg_val",)
    train = DatasetCatalog.get("custom_sem_seg_train")
    assert [(Path(d["file_name"]).name, Path(d["sem_seg_file_name"]).name) for d in train] == [
        ("train_0.jpg", "train_0.png"), ("train_1.png", "train_1.png"),
        ("train_2.jpg", "train_2.png")]
    assert len(DatasetCatalog.get("custom_sem_seg_val")) == 2
    for name in CUSTOM_DATASETS.values():
        metadata = MetadataCatalog.get(name)
        assert metadata.stuff_classes == CLASSES
        assert [tuple(c) for c in metadata.stuff_colors] == COLORS
        assert metadata.ignore_label == 255 and metadata.evaluator_type == "sem_seg"


def test_colors_txt_is_optional(tmp_path):
    root = write_custom_root(tmp_path / "data", colors=False)
    cfg = custom_config(root)
    assert MetadataCatalog.get("custom_sem_seg_val").get("stuff_colors", None) is None
    metadata = predictor.display_metadata(cfg)  # the demo draws with detectron2's palette
    assert metadata.stuff_classes == CLASSES and len(metadata.stuff_colors) == 3


def test_matching_num_classes_is_accepted_and_another_is_an_error(tmp_path, capsys):
    root = write_custom_root(tmp_path / "data")
    cfg = custom_config(root, MASKFORMER, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 3
    message = train_net_error(capsys, "--config-file", MASKFORMER, "DATASETS.CUSTOM_ROOT",
                              str(root), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5")
    assert message == (f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is 5 but {root / 'classes.txt'} lists 3 "
                       "classes; set NUM_CLASSES to -1 (take it from classes.txt) or to 3")
    # a config of a known dataset with its own number of classes, pointed at the folder
    with pytest.raises(ConfigError, match=r"NUM_CLASSES is 11 but .*classes.txt lists 3 classes"):
        custom_config(root, "configs/camvid/maskformer_R50.yaml")


def test_custom_config_without_root_is_an_error(capsys):
    message = train_net_error(capsys, "--config-file", MASKFORMER)
    assert message == ("DATASETS.CUSTOM_ROOT is empty but MODEL.SEM_SEG_HEAD.NUM_CLASSES is -1 "
                       "(take it from ROOT/classes.txt); pass DATASETS.CUSTOM_ROOT ROOT, your "
                       "dataset folder")
    with pytest.raises(ConfigError, match="DATASETS.CUSTOM_ROOT is empty but DATASETS.TRAIN names "
                                          "custom_sem_seg_train"):
        load_config(MASKFORMER, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])


def _no_classes(root):
    (root / "classes.txt").unlink()


def _duplicate(root):
    (root / "classes.txt").write_text("sky\nroad\nsky\n")


def _gap(root):
    (root / "classes.txt").write_text("sky\n\nroad\n")


def _two_colors(root):
    (root / "colors.txt").write_text("0 0 0\n1 1 1\n")


def _color_300(root):
    (root / "colors.txt").write_text("0 0 0\n300 0 0\n1 2 3\n")


BAD_ROOTS = {
    "missing classes.txt": (_no_classes, "classes.txt", "{file} not found: DATASETS.CUSTOM_ROOT "
                            "{root} needs a classes.txt with one class name per line"),
    "empty classes.txt": (lambda root: (root / "classes.txt").write_text("\n\n"), "classes.txt",
                          "{file} is empty: it lists the class names, one a line"),
    "duplicate class": (_duplicate, "classes.txt",
                        "{file} names class 'sky' twice, on lines 1 and 3"),
    "empty line": (_gap, "classes.txt", "{file} line 2 is empty: every line names the class of "
                   "its label value (line 2 is value 1)"),
    "colors.txt too short": (_two_colors, "colors.txt", "{file} has 2 lines but {root}/classes.txt "
                             "lists 3 classes: give one \"R G B\" line per class"),
    "colour above 255": (_color_300, "colors.txt", "{file} line 2 is '300 0 0', not \"R G B\" with "
                         "three whole numbers from 0 to 255"),
}


@pytest.mark.parametrize("case", BAD_ROOTS, ids=list(BAD_ROOTS))
def test_bad_class_and_colour_files_are_one_line_naming_the_file(tmp_path, capsys, case):
    spoil, file_name, expected = BAD_ROOTS[case]
    root = write_custom_root(tmp_path / "data")
    spoil(root)
    message = train_net_error(capsys, "--config-file", MASKFORMER, "DATASETS.CUSTOM_ROOT",
                              str(root), "OUTPUT_DIR", str(tmp_path / "out"))
    assert message.startswith(expected.format(file=root / file_name, root=root)), message
    with pytest.raises(MetadataFileError):
        custom_config(root)


def test_missing_root_is_named(tmp_path, capsys):
    missing = tmp_path / "nothing_here"
    message = train_net_error(capsys, "--config-file", MASKFORMER, "DATASETS.CUSTOM_ROOT",
                              str(missing))
    assert message == (f"DATASETS.CUSTOM_ROOT {missing} does not exist: it names a dataset folder "
                       "with classes.txt, images/ and labels/")


@pytest.mark.parametrize("unpaired", ["image", "label"])
def test_unpaired_files_stop_loading_with_the_file_named(tmp_path, capsys, unpaired):
    root = write_custom_root(tmp_path / "data")
    if unpaired == "image":
        (root / "labels" / "train" / "train_1.png").unlink()
        expected = (f"{root}/images/train/train_1.png: image has no label map "
                    f"{root}/labels/train/train_1.png")
    else:
        (root / "images" / "train" / "train_1.png").unlink()
        expected = (f"{root}/labels/train/train_1.png: label map has no image train_1.jpg or "
                    f"train_1.png in {root}/images/train")
    custom_config(root)
    with pytest.raises(DataError) as error:
        DatasetCatalog.get("custom_sem_seg_train")
    assert str(error.value) == expected
    # train_net says the same, in one line, before building anything
    message = train_net_error(capsys, "--config-file", MASKFORMER, "DATASETS.CUSTOM_ROOT",
                              str(root), "OUTPUT_DIR", str(tmp_path / "out"))
    assert message == expected


# ---------------------------------------------------------------- tools/check_dataset.py


def test_check_dataset_lists_every_problem_at_once(tmp_path, capsys):
    root = write_custom_root(tmp_path / "data", splits=(("train", 4), ("val", 2)))
    train_images, train_labels = root / "images" / "train", root / "labels" / "train"
    (train_labels / "train_3.png").unlink()  # an image without a label map
    Image.open(train_images / "train_0.jpg").save(train_images / "train_0.png")  # a NAME twice
    Image.fromarray(label_map(0)).save(train_labels / "extra.png")  # a label map without image
    Image.fromarray(label_map(0)[:32]).save(train_labels / "train_0.png")  # another size
    beyond = label_map(1)
    beyond[10, 10:13] = [3, 7, 254]  # beyond classes.txt; 255 (the top rows) is fine
    Image.fromarray(beyond).save(train_labels / "train_1.png")
    check_tool = load_script(REPO_ROOT / "tools" / "check_dataset.py")
    status = check_tool.main(["--config-file", MASKFORMER, "DATASETS.CUSTOM_ROOT", str(root),
                              "--no-progress", "--workers", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    values = "outside the class ids [0, 3) that are not the ignore label 255"
    assert lines[:5] == [
        f"{train_images}/train_0.png: image has the NAME of {train_images}/train_0.jpg, and label "
        "maps are matched by NAME: rename or remove one",
        f"{train_images}/train_3.png: image has no label map {train_labels}/train_3.png",
        f"{train_labels}/extra.png: label map has no image extra.jpg or extra.png in {train_images}",
        f"{train_labels}/train_0.png: semantic label map is 64x32 (WxH) but its image "
        f"'{train_images}/train_0.jpg' is 64x64",
        f"{train_labels}/train_1.png: semantic label map has values [3, 7, 254] {values}",
    ]
    assert lines[5].startswith("custom_sem_seg_train: 3 entries, 5 problems in 5 files (")
    assert lines[6].startswith("custom_sem_seg_val: 2 entries, 0 problems in 0 files (")
    assert len(lines) == 7
    # loading (train_net) stops at the first pairing problem, in one line
    with pytest.raises(DataError, match=r"rename or remove one \(2 more unpaired files; "
                                        r"tools/check_dataset.py lists them\)$"):
        DatasetCatalog.get("custom_sem_seg_train")


# ---------------------------------------------------------------- train_net and the demo


def train_net_args(root, output, *opts, flags=(), config=MASKFORMER):
    """train_net.py's arguments for `config` on the folder `root`, at the tiny width."""
    tiny = TINY_OPTS if config == MASKFORMER else TINY_MASK2FORMER_OPTS
    return train_net.argument_parser().parse_args(
        ["--config-file", config, *flags, "DATASETS.CUSTOM_ROOT", str(root), "OUTPUT_DIR",
         str(output), *tiny, *opts])


def untrained_weights(root, path: Path, config=MASKFORMER) -> Path:
    """The tiny model of `config` on `root`'s classes, untrained, saved as a checkpoint."""
    opts = TINY_OPTS if config == MASKFORMER else TINY_MASK2FORMER_OPTS
    torch.manual_seed(0)
    model = build_model(custom_config(root, config, *opts))
    torch.save({"model": model.state_dict()}, path)
    return path


def assert_miou_per_class(results):
    metrics = results["sem_seg"]
    assert 0 <= metrics["mIoU"] <= 100
    assert {f"IoU-{name}" for name in CLASSES} <= set(metrics)


@pytest.mark.parametrize("config", [MASKFORMER, MASK2FORMER])
def test_train_net_trains_and_reports_miou_on_the_val_split(tmp_path, config):
    root = write_custom_root(tmp_path / "data")
    output = tmp_path / "run"
    results = train_net.main(train_net_args(root, output, "SOLVER.MAX_ITER", "3",
                                            config=config))
    assert_miou_per_class(results)
    assert (output / "model_final.pth").is_file()
    log = (output / "log.txt").read_text()
    assert f"Final results on custom_sem_seg_val: mIoU {results['sem_seg']['mIoU']:.2f}" in log


def test_eval_only_reports_miou(tmp_path):
    root = write_custom_root(tmp_path / "data")
    weights = untrained_weights(root, tmp_path / "untrained.pth")
    results = train_net.main(train_net_args(root, tmp_path / "eval", "MODEL.WEIGHTS", str(weights),
                                            flags=["--eval-only"]))
    assert_miou_per_class(results)


def test_demo_names_and_colours_classes_from_the_folder(tmp_path, capsys):
    """Only classes.txt and colors.txt of the folder are needed: no images, no labels."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "colors.txt").write_text("".join(f"{r} {g} {b}\n" for r, g, b in COLORS))
    weights = untrained_weights(root, tmp_path / "untrained.pth")
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), np.uint8)).save(image)
    opts = ["DATASETS.CUSTOM_ROOT", str(root), "MODEL.WEIGHTS", str(weights)] + TINY_OPTS
    argv = ["--config-file", MASKFORMER, "--input", str(image), "--output", str(tmp_path / "out.png"),
            "--opts"] + opts
    assert demo.main(argv) == 0
    err = capsys.readouterr().err
    described = re.search(rf"{re.escape(str(image))}: classes: (.+) in ", err)
    assert described, err
    assert set(described.group(1).split(", ")) <= set(CLASSES)
    assert (tmp_path / "out.png").is_file()
    metadata = predictor.display_metadata(demo.setup_cfg(demo.get_parser().parse_args(argv)))
    assert metadata.stuff_classes == CLASSES
    assert [tuple(c) for c in metadata.stuff_colors] == COLORS


# ---------------------------------------------------------------- COCO format (the doc's snippets)


def doc_command_args(name: str):
    """The arguments the doc's command for `name` passes to the script (after its name), with
    the config file made absolute: the doc runs them in the repository root, the test elsewhere."""
    words = shlex.split(doc_block(DOC, f"command: {name}", "bash").replace("\\\n", " "))
    assert words[:2] == ["python", f"train_my_{name.removeprefix('coco-')}.py"], words
    args = words[2:]
    config = args.index("--config-file") + 1
    args[config] = str(REPO_ROOT / args[config])
    return args


def run_snippet(name: str) -> None:
    """Runs the doc's script for `name` as an import (its train_net.cli() is for __main__)."""
    code = doc_block(DOC, f"snippet: {name}", "python")
    exec(compile(code, f"{DOC} ({name})", "exec"), {"__name__": f"train_my_{name}"})


def save_jpg(path: Path, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path, quality=95)


def square(x, y, side):
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def write_coco_instances(data: Path):
    """my_data/annotations/instances_{train,val}.json and images: 2 images a split, each with a
    polygon "cat", a compressed-RLE "bird" and an uncompressed-RLE "dog" (category ids 1, 5, 2:
    not contiguous). Returns {file name: sorted contiguous classes} of the training split."""
    rng = np.random.default_rng(0)
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 5, "name": "bird"}]
    expected = {}
    for split in ("train", "val"):
        images, annotations = [], []
        for index in range(2):
            file_name = f"{split}_{index}.jpg"
            save_jpg(data / "images" / split / file_name, rng)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_name, "height": SIZE, "width": SIZE})
            bird = np.zeros((SIZE, SIZE), np.uint8)
            bird[40:60, 5 + index:25 + index] = 1
            compressed = mask_util.encode(np.asfortranarray(bird))
            compressed["counts"] = compressed["counts"].decode("ascii")
            dog = np.zeros((SIZE, SIZE), np.uint8)
            dog[5:20, 40:60] = 1
            # uncompressed RLE: run lengths of the column-major pixels, starting with zeros
            pixels = dog.ravel(order="F")
            edges = np.r_[0, np.flatnonzero(np.diff(pixels)) + 1, pixels.size]
            runs = ([0] if pixels[0] else []) + np.diff(edges).tolist()
            uncompressed = {"size": [SIZE, SIZE], "counts": runs}
            for category, segmentation, bbox, area in (
                    (1, square(4 + index, 4, 16), [4 + index, 4, 16, 16], 256),
                    (5, compressed, [5 + index, 40, 20, 20], 400),
                    (2, uncompressed, [40, 5, 20, 15], 300)):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": category, "segmentation": segmentation,
                                    "bbox": bbox, "area": area, "iscrowd": 0})
            expected[file_name] = [0, 1, 2]  # cat, dog, bird: contiguous in id order
        path = data / "annotations" / f"instances_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": categories}))
    return expected


def write_coco_panoptic(data: Path):
    """my_data/annotations/panoptic_{train,val}.json, my_data/panoptic_{train,val}/*.png and the
    images: sky (stuff, id 3) above ground (stuff, id 4), one or two "box" things (id 9).
    Returns {file name: contiguous classes in segments_info order} of the training split."""
    rng = np.random.default_rng(1)
    categories = [{"id": 3, "name": "sky", "isthing": 0}, {"id": 4, "name": "ground", "isthing": 0},
                  {"id": 9, "name": "box", "isthing": 1}]
    contiguous = {3: 0, 4: 1, 9: 2}
    expected = {}
    for split in ("train", "val"):
        images, annotations = [], []
        for index in range(2):
            stem = f"{split}_{index}"
            save_jpg(data / "images" / split / f"{stem}.jpg", rng)
            ids = np.full((SIZE, SIZE), 1000, np.int64)
            ids[SIZE // 2:] = 2000
            segments = [(1000, 3), (2000, 4)]
            for box in range(index + 1):
                ids[36:52, 4 + 30 * box:20 + 30 * box] = 9000 + box
                segments.append((9000 + box, 9))
            png = data / f"panoptic_{split}" / f"{stem}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(id_to_rgb(ids)).save(png)
            segments_info = []
            for segment_id, category in segments:
                ys, xs = np.nonzero(ids == segment_id)
                segments_info.append({
                    "id": segment_id, "category_id": category, "iscrowd": 0, "area": int(xs.size),
                    "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]})
            images.append({"id": index + 1, "file_name": f"{stem}.jpg", "height": SIZE,
                           "width": SIZE})
            annotations.append({"image_id": index + 1, "file_name": f"{stem}.png",
                                "segments_info": segments_info})
            expected[f"{stem}.jpg"] = [contiguous[c] for _, c in segments]
        path = data / "annotations" / f"panoptic_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": categories}))
    return expected


COCO_CASES = {
    "coco-instances": (write_coco_instances, ("my_instances_train", "my_instances_val"), "segm"),
    "coco-panoptic": (write_coco_panoptic, ("my_panoptic_train", "my_panoptic_val"), "panoptic_seg"),
}


@pytest.mark.parametrize("case", COCO_CASES)
def test_doc_snippet_registers_coco_data_that_trains(tmp_path, monkeypatch, case):
    """The doc's script registers the data, its command's config and overrides (at the tiny width,
    from scratch, two steps) train on it, and the evaluation gives mask AP or PQ."""
    write, names, metric = COCO_CASES[case]
    monkeypatch.chdir(tmp_path)  # the snippets' paths are relative: my_data/...
    expected = write(tmp_path / "my_data")
    with temporary_names(*names):
        run_snippet(case)
        args = train_net.argument_parser().parse_args(
            doc_command_args(case) + TINY_MASK2FORMER_OPTS + [
                "MODEL.WEIGHTS", "", "SOLVER.AMP.ENABLED", "False", "SOLVER.MAX_ITER", "2",
                "OUTPUT_DIR", str(tmp_path / "run")])
        cfg = train_net.setup(args)
        train_net.check_datasets_registered_and_loadable(cfg)

        batch = next(iter(build_train_loader(cfg)))
        assert len(batch) == 2
        for entry in batch:
            classes = entry["instances"].gt_classes.tolist()
            if case == "coco-instances":
                classes = sorted(classes)
            assert classes == expected[Path(entry["file_name"]).name]
            masks = entry["instances"].gt_masks
            assert masks.shape[-2:] == entry["image"].shape[-2:] and bool(masks.flatten(1).any(1).all())

        trainer = train_net.Trainer(cfg)
        trainer.resume_or_load(resume=False)
        results = trainer.train()
        losses = [value for value, _ in trainer.storage.history("total_loss").values()]
        assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
        assert metric in results
