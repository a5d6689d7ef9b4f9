"""Dataset checks: the pre-flight of a config's datasets, the full scan of a dataset's files
(mask_former.data.dataset_check), tools/check_dataset.py and train_net's first-start scan."""
import json
import re
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from detectron2.config import get_cfg

from conftest import REPO_ROOT, shared_path
from helpers import load_script, registered_dataset, save_png, truncate, write_semantic_dataset
from mask_former import add_mask_former_config
from mask_former.data import dataset_check
from mask_former.data.dataset_check import (
    DatasetConfigError,
    DatasetNotRegisteredError,
    DatasetProblemsError,
    Problem,
    check_datasets_registered_and_loadable,
    scan_before_training,
    scan_dataset,
)
from mask_former.data.dataset_mappers import MaskFormerSemanticDatasetMapper
from mask_former.errors import UserError

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402

CLASSES = ["a", "b", "c"]
IGNORE = 255


def unique_name(kind):
    return f"_test_dataset_check_{kind}_{uuid.uuid4().hex[:8]}"


def good_labels(count=2):
    labels = []
    for index in range(count):
        label = np.zeros((24, 32), np.uint8)
        label[8:] = 1 + index % 2
        label[-2:] = IGNORE
        labels.append(label)
    return labels


def semantic_dataset(root, count=2):
    """(name, dicts) of a good 3-class semantic dataset under `root`, to be registered."""
    return unique_name("semantic"), write_semantic_dataset(root, good_labels(count))


def config(train=(), test=(), num_classes=3, output_dir=""):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.DATALOADER.NUM_WORKERS = 1
    return cfg


SEMANTIC_META = dict(stuff_classes=CLASSES, ignore_label=IGNORE, evaluator_type="sem_seg")


# ---------------------------------------------------------------- pre-flight


def test_unregistered_names_are_listed_with_close_names(tmp_path):
    name, dicts = semantic_dataset(tmp_path)
    with registered_dataset(name, dicts, **SEMANTIC_META):
        cfg = config(train=[name, "camvid_sem_seg_trian"], test=["camvid_sem_seg_vall"])
        with pytest.raises(DatasetNotRegisteredError) as error:
            check_datasets_registered_and_loadable(cfg)
    message = str(error.value)
    train, test = message.split("; ")
    assert train.startswith("DATASETS.TRAIN names dataset 'camvid_sem_seg_trian', which is not "
                            "registered (close names: camvid_sem_seg_train, ")
    assert test.startswith("DATASETS.TEST names dataset 'camvid_sem_seg_vall', which is not "
                           "registered (close names: camvid_sem_seg_val, ")
    assert isinstance(error.value, UserError) and isinstance(error.value, KeyError)


def test_a_name_like_no_other_says_how_to_list_them():
    with pytest.raises(DatasetNotRegisteredError, match=r"^Dataset 'zzzz' is not registered \(\d+ "
                                                        r"names are; tools/check_dataset.py --list "
                                                        r"prints them\)$"):
        dataset_check.require_registered("zzzz")


def test_the_mappers_say_an_unregistered_training_dataset_is_not_registered():
    """Not detectron2's "Attribute 'ignore_label' does not exist in the metadata"."""
    with pytest.raises(DatasetNotRegisteredError, match="DATASETS.TRAIN names dataset "
                       "'camvid_sem_seg_trian', which is not registered"):
        MaskFormerSemanticDatasetMapper(config(train=["camvid_sem_seg_trian"]), True)


def test_missing_val_split_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    name, dicts = semantic_dataset(tmp_path / "train")
    with registered_dataset(name, dicts, **SEMANTIC_META):
        cfg = config(train=[name], test=["camvid_sem_seg_val"], num_classes=11)
        with pytest.raises(DatasetConfigError) as error:
            check_datasets_registered_and_loadable(cfg)
    assert str(error.value).startswith(
        "DATASETS.TEST dataset 'camvid_sem_seg_val' cannot be loaded: Dataset 'camvid_sem_seg_val' "
        f"is not where it is expected: missing '{tmp_path}/camvid/images/val'")


def test_loadable_datasets_give_their_sizes_and_eval_only_skips_training_sets(tmp_path):
    name, dicts = semantic_dataset(tmp_path, count=3)
    with registered_dataset(name, dicts, **SEMANTIC_META):
        cfg = config(train=[name], test=[name])
        assert check_datasets_registered_and_loadable(cfg) == {name: 3}
        assert check_datasets_registered_and_loadable(
            config(train=["not_registered"], test=[name]), train=False) == {name: 3}


def test_empty_dataset_is_refused():
    name = unique_name("empty")
    with registered_dataset(name, [], **SEMANTIC_META):
        with pytest.raises(DatasetConfigError, match=f"^DATASETS.TRAIN dataset '{name}' has no "
                                                     "entries$"):
            check_datasets_registered_and_loadable(config(train=[name]))


def test_classes_must_fit_num_classes(tmp_path):
    name, dicts = semantic_dataset(tmp_path)
    with registered_dataset(name, dicts, **SEMANTIC_META):
        # a training set may have fewer classes than the model predicts, a test set not
        check_datasets_registered_and_loadable(config(train=[name], num_classes=4))
        with pytest.raises(DatasetConfigError) as error:
            check_datasets_registered_and_loadable(config(train=[name], test=[name], num_classes=4))
        assert str(error.value) == (f"Dataset {name!r} (DATASETS.TEST) has 3 classes (stuff_classes) "
                                    "but MODEL.SEM_SEG_HEAD.NUM_CLASSES is 4; set it to 3.")
        with pytest.raises(DatasetConfigError, match=re.escape(
                f"Dataset {name!r} (DATASETS.TRAIN) has 3 classes (stuff_classes) but MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                "is 2; set it to 3.")):
            check_datasets_registered_and_loadable(config(train=[name], num_classes=2))


# ---------------------------------------------------------------- full scan


def broken_semantic_dataset(root):
    """Six entries: good, truncated image + stray label values, label of another size, stray
    values, missing label, missing image. Returns (dicts, the problems expected, in order,
    with PIL's message for the truncated image left out)."""
    labels = good_labels(6)
    labels[1][0, 0] = 50
    labels[3][5, 5:8] = [3, 60, 254]
    dicts = write_semantic_dataset(root, labels)
    truncate(dicts[1]["file_name"])
    save_png(dicts[2]["sem_seg_file_name"], labels[2][:20])
    Path(dicts[4]["sem_seg_file_name"]).unlink()
    Path(dicts[5]["file_name"]).unlink()
    values = "outside the class ids [0, 3) that are not the ignore label 255"
    expected = [
        f"{dicts[1]['file_name']}: cannot read image file: OSError: image file is truncated",
        f"{dicts[1]['sem_seg_file_name']}: semantic label map has values [50] {values}",
        f"{dicts[2]['sem_seg_file_name']}: semantic label map is 32x20 (WxH) but its image "
        f"{dicts[2]['file_name']!r} is 32x24",
        f"{dicts[3]['sem_seg_file_name']}: semantic label map has values [3, 60, 254] {values}",
        f"{dicts[4]['sem_seg_file_name']}: semantic label map not found",
        f"{dicts[5]['file_name']}: image file not found",
    ]
    return dicts, expected


def problem_lines(problems):
    """The problems as printed, PIL's detail of a truncated file cut after its first words."""
    lines = []
    for problem in problems:
        line = str(problem)
        if "image file is truncated" in line:
            line = line[:line.index("image file is truncated") + len("image file is truncated")]
        lines.append(line)
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_scan_lists_every_problem_at_once(tmp_path, workers):
    dicts, expected = broken_semantic_dataset(tmp_path)
    with registered_dataset(unique_name("broken"), dicts, **SEMANTIC_META) as name:
        problems = scan_dataset(name, workers=workers, progress=False)
    assert problem_lines(problems) == expected
    assert all(isinstance(p, Problem) for p in problems)
    assert problems[0].path == dicts[1]["file_name"]


def test_scan_of_a_good_dataset_finds_nothing(tmp_path):
    name, dicts = semantic_dataset(tmp_path, count=3)
    with registered_dataset(name, dicts, **SEMANTIC_META):
        assert scan_dataset(name, workers=1, progress=False) == []


def test_scan_checks_labels_against_the_entry_size_when_the_image_is_unreadable(tmp_path):
    dicts = write_semantic_dataset(tmp_path, good_labels(1))
    Path(dicts[0]["file_name"]).write_bytes(b"not an image")
    dicts[0].update(height=24, width=30)
    with registered_dataset(unique_name("entry_size"), dicts, **SEMANTIC_META) as name:
        lines = [str(p) for p in scan_dataset(name, workers=1, progress=False)]
    assert lines[0].startswith(f"{dicts[0]['file_name']}: cannot read image file: "
                               "UnidentifiedImageError: cannot identify image file")
    assert lines[1:] == [f"{dicts[0]['sem_seg_file_name']}: semantic label map is 32x24 (WxH) but "
                         f"its image {dicts[0]['file_name']!r} is 30x24"]


def pan_rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def test_scan_of_panoptic_and_detr_style_entries(tmp_path):
    """Panoptic entries (with a semantic map, as ADE20K's) and DETR/COCO-style ones (panoptic PNG
    only, no height/width): sizes, categories, a missing segments_info, an entry without labels."""
    ids = np.zeros((24, 32), np.int64)
    ids[:12], ids[12:] = 300, 70000
    segments = [{"id": 300, "category_id": 0, "iscrowd": 0},
                {"id": 70000, "category_id": 2, "iscrowd": 0}]
    image = np.zeros((24, 32, 3), np.uint8)
    dicts = []
    for index in range(5):
        entry = {"file_name": save_png(tmp_path / f"{index}.jpg.png", image),
                 "pan_seg_file_name": save_png(tmp_path / f"{index}_pan.png", pan_rgb(ids)),
                 "segments_info": [dict(s) for s in segments]}
        dicts.append(entry)
    semantic = (ids == 70000).astype(np.uint8)
    dicts[0]["sem_seg_file_name"] = save_png(tmp_path / "0_sem.png", semantic)
    dicts[0].update(height=24, width=32)
    dicts[1]["segments_info"][1]["category_id"] = 5              # beyond the 3 classes
    save_png(dicts[2]["pan_seg_file_name"], pan_rgb(ids[:, :16]))  # another size
    del dicts[3]["segments_info"]
    del dicts[4]["pan_seg_file_name"], dicts[4]["segments_info"]
    with registered_dataset(unique_name("panoptic"), dicts, **SEMANTIC_META) as name:
        lines = [str(p) for p in scan_dataset(name, workers=1, progress=False)]
    assert lines == [
        f"{dicts[1]['pan_seg_file_name']}: panoptic PNG has segments_info category ids [5] outside "
        "the contiguous class ids [0, 3)",
        f"{dicts[2]['pan_seg_file_name']}: panoptic PNG is 16x24 (WxH) but its image "
        f"{dicts[2]['file_name']!r} is 32x24",
        f"{dicts[3]['pan_seg_file_name']}: panoptic PNG has no 'segments_info' in its dataset entry",
        f"{dicts[4]['file_name']}: dataset entry has neither 'sem_seg_file_name' nor "
        "'pan_seg_file_name'",
    ]


@pytest.mark.needs_shared
def test_scan_of_camvid_val_finds_nothing(monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(shared_path("camvid").parent))
    assert scan_dataset("camvid_sem_seg_val", workers=2, progress=False) == []


# ---------------------------------------------------------------- tools/check_dataset.py


@pytest.fixture(scope="module")
def check_tool():
    return load_script(REPO_ROOT / "tools" / "check_dataset.py")


def test_check_dataset_tool_prints_every_problem_and_exits_1(tmp_path, check_tool, capsys):
    dicts, expected = broken_semantic_dataset(tmp_path / "broken")
    good, good_dicts = semantic_dataset(tmp_path / "good")
    with registered_dataset(unique_name("broken"), dicts, **SEMANTIC_META) as broken, \
            registered_dataset(good, good_dicts, **SEMANTIC_META):
        assert check_tool.main([good, "--no-progress", "--workers", "1"]) == 0
        assert capsys.readouterr().out.startswith(f"{good}: 2 entries, 0 problems in 0 files (")
        assert check_tool.main([broken, good, "--no-progress"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert problem_lines(lines[:6]) == expected
    assert lines[6].startswith(f"{broken}: 6 entries, 6 problems in 6 files (")
    assert lines[7].startswith(f"{good}: 2 entries, 0 problems in 0 files (")
    assert len(lines) == 8


def test_check_dataset_tool_refuses_unregistered_names_before_scanning(check_tool):
    with pytest.raises(DatasetNotRegisteredError, match="'camvid_sem_seg_vla' is not registered "
                                                        r"\(close names: camvid_sem_seg_val"):
        check_tool.main(["camvid_sem_seg_val", "camvid_sem_seg_vla"])


# ---------------------------------------------------------------- train_net's first start


def test_scan_before_training_refuses_records_and_rescans_only_what_failed(tmp_path, monkeypatch):
    dicts, expected = broken_semantic_dataset(tmp_path / "broken")
    good, good_dicts = semantic_dataset(tmp_path / "good")
    scanned = []
    real_scan = dataset_check.scan_dataset

    def counted_scan(name, *args, **kwargs):
        scanned.append(name)
        return real_scan(name, *args, **kwargs)

    monkeypatch.setattr(dataset_check, "scan_dataset", counted_scan)
    output = tmp_path / "output"
    with registered_dataset(unique_name("broken"), dicts, **SEMANTIC_META) as broken, \
            registered_dataset(good, good_dicts, **SEMANTIC_META):
        cfg = config(train=[good], test=[broken, good], output_dir=output)
        with pytest.raises(DatasetProblemsError) as error:
            scan_before_training(cfg)
        message = str(error.value).splitlines()
        assert message[0] == (f"Not training: the dataset check found 6 problems (6 in {broken}); "
                              f"all of them are listed in {output / 'dataset_problems.txt'}:")
        assert problem_lines(message[1:7]) == expected
        assert message[7] == ("Fix them (tools/check_dataset.py NAME checks a dataset again), or "
                              "pass --skip-dataset-check to train anyway.")
        listed = (output / "dataset_problems.txt").read_text().splitlines()
        assert problem_lines(listed) == expected
        assert json.loads((output / "dataset_check.json").read_text()) == {"passed": [good]}
        assert scanned == [good, broken]  # each once, in config order

        # fixed: only the dataset that failed is scanned again; then nothing is
        dicts[:] = dicts[:1]
        scan_before_training(cfg)
        assert scanned == [good, broken, broken]
        assert json.loads((output / "dataset_check.json").read_text()) == {"passed": [good, broken]}
        scan_before_training(cfg)
        assert scanned == [good, broken, broken]


def test_problem_lists_are_cut_in_the_error(tmp_path):
    labels = good_labels(25)
    for label in labels:
        label[0, 0] = 99
    dicts = write_semantic_dataset(tmp_path, labels)
    with registered_dataset(unique_name("many"), dicts, **SEMANTIC_META) as name:
        with pytest.raises(DatasetProblemsError) as error:
            scan_before_training(config(train=[name], output_dir=tmp_path / "output"))
    lines = str(error.value).splitlines()
    assert len(lines) == 1 + 20 + 2 and lines[21] == "... and 5 more"
    assert len((tmp_path / "output" / "dataset_problems.txt").read_text().splitlines()) == 25


class ReachedTrainer(Exception):
    pass


def refuse_to_build(cfg):
    raise ReachedTrainer


@pytest.mark.parametrize("flags, scans", [([], True), (["--skip-dataset-check"], False),
                                          (["--resume"], False)])
def test_train_net_scans_on_a_first_start_only(tmp_path, monkeypatch, flags, scans):
    """train_net refuses to train on a broken training set, before building the trainer, unless
    --skip-dataset-check is given or the run resumes."""
    dicts, _ = broken_semantic_dataset(tmp_path / "broken")
    monkeypatch.setattr(train_net, "Trainer", refuse_to_build)
    with registered_dataset(unique_name("broken"), dicts, **SEMANTIC_META) as broken:
        args = train_net.argument_parser().parse_args(flags + [
            "--config-file", str(REPO_ROOT / "configs/quickstart/maskformer_tiny_shapes.yaml"),
            "OUTPUT_DIR", str(tmp_path / "output"), "DATASETS.TRAIN", f"('{broken}',)",
            "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "1"])
        with pytest.raises(DatasetProblemsError if scans else ReachedTrainer):
            train_net.main(args)
    assert (tmp_path / "output" / "dataset_problems.txt").exists() == scans
