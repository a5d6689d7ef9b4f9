"""load_config and cpu_fallback, and what each entry point prints for a bad config: one line
naming the file or key and what was expected, exit status 1, no traceback."""
import logging
import re
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from helpers import load_script
from mask_former.config import ConfigError, cpu_fallback, load_config
from tiny_models import QUICKSTART_CONFIG

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402

demo = load_script(REPO_ROOT / "demo" / "demo.py", "maskformer_demo")
analyze_model = load_script(REPO_ROOT / "tools" / "analyze_model.py", "analyze_model")
benchmark = load_script(REPO_ROOT / "tools" / "benchmark.py", "benchmark")

LOGGED_ERROR = re.compile(r"^\[\d\d:\d\d:\d\d ERROR\] (.*)$")


def bad_config(tmp_path, case):
    """(config file argument, overrides, the message) of each kind of bad config."""
    path = tmp_path / f"{case}.yaml"
    if case == "unknown_key_in_file":
        path.write_text("MODEL:\n  MASK_FORMER:\n    NUM_QUERIES: 50\n")
        return str(path), [], (f"config file {path}: unknown config key MODEL.MASK_FORMER.NUM_QUERIES "
                               "(did you mean MODEL.MASK_FORMER.NUM_OBJECT_QUERIES?)")
    if case == "unknown_key_in_overrides":
        return str(QUICKSTART_CONFIG), ["MODEL.MASK_FORMER.NUM_QUERIES", "50"], (
            "config overrides: unknown config key MODEL.MASK_FORMER.NUM_QUERIES "
            "(did you mean MODEL.MASK_FORMER.NUM_OBJECT_QUERIES?)")
    if case == "missing_file":
        return "no/such.yaml", [], (f"config file no/such.yaml not found "
                                    f"(looked in {tmp_path} and {REPO_ROOT})")
    if case == "wrong_type":
        return str(QUICKSTART_CONFIG), ["SOLVER.IMS_PER_BATCH", "2.5"], (
            "config overrides: SOLVER.IMS_PER_BATCH expects an integer (like 8), got 2.5")
    if case == "not_yaml":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
        return str(path), [], f"config file {path} is not a YAML file: it is not UTF-8 text"
    raise AssertionError(case)


CASES = ["unknown_key_in_file", "unknown_key_in_overrides", "missing_file", "wrong_type", "not_yaml"]


def run_train_net(config, opts, tmp_path, capsys):
    status = train_net.cli(["--config-file", config] + opts)
    return status, capsys.readouterr().err


def run_demo(config, opts, tmp_path, capsys):
    image = tmp_path / "image.png"  # read before the config, so it must be an image
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    status = demo.main(["--config-file", config, "--input", str(image), "--output",
                        str(tmp_path / "out.png"), "--random-weights", "--opts"] + opts)
    return status, capsys.readouterr().err


def run_analyze_model(config, opts, tmp_path, capsys):
    status = analyze_model.main(["--config-file", config, "--tasks", "parameter"] + opts)
    return status, capsys.readouterr().out


def run_benchmark(config, opts, tmp_path, capsys):
    status = benchmark.cli(["--config-file", config, "--device", "cpu"] + opts)
    return status, capsys.readouterr().err


ENTRY_POINTS = {"train_net": run_train_net, "demo": run_demo, "analyze_model": run_analyze_model,
                "benchmark": run_benchmark}
PREFIXES = {"train_net": "train_net.py: error: ", "benchmark": "benchmark.py: error: "}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_bad_config_is_one_line_naming_the_culprit(tmp_path, capsys, monkeypatch, entry_point, case):
    monkeypatch.chdir(tmp_path)
    config, opts, message = bad_config(tmp_path, case)
    status, output = ENTRY_POINTS[entry_point](config, opts, tmp_path, capsys)
    assert status == 1
    assert "Traceback" not in output
    if entry_point in PREFIXES:
        errors = [line for line in output.splitlines() if line.startswith(PREFIXES[entry_point])]
        assert errors == [PREFIXES[entry_point] + message]
    else:  # the demo and analyze_model log their errors
        errors = [LOGGED_ERROR.match(line).group(1) for line in output.splitlines()
                  if LOGGED_ERROR.match(line)]
        assert errors == [message]


def test_relative_config_path_is_also_looked_up_in_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/quickstart/maskformer_tiny_shapes.yaml", ["SOLVER.MAX_ITER", "7"])
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 16 and cfg.SOLVER.MAX_ITER == 7
    assert not cfg.is_frozen()


@pytest.mark.parametrize("text, message", [
    ("MODEL: [unclosed\n", "is not valid YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1"),
    ("", "is not a config: its YAML is empty"),
    ("just some words\n", "is not a config: its YAML is a str, not a mapping of config keys"),
])
def test_file_that_is_not_a_config(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    assert str(error.value) == f"config file {path} {message}"


def test_value_where_a_group_of_keys_belongs(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("MODEL: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    assert str(error.value) == f"config file {path}: MODEL is a group of keys, not a value (got 3)"


def test_override_without_a_value():
    with pytest.raises(ConfigError) as error:
        load_config(str(QUICKSTART_CONFIG), ["SOLVER.MAX_ITER", "7", "MODEL.DEVICE"])
    assert str(error.value) == ("config overrides come in KEY VALUE pairs; MODEL.DEVICE has no "
                                "value (overrides: SOLVER.MAX_ITER 7 MODEL.DEVICE)")


def test_config_error_is_a_value_error():
    # Callers that catch ValueError around config loading keep working.
    with pytest.raises(ValueError):
        load_config(str(QUICKSTART_CONFIG), ["SOLVER.IMS_PER_BATCH", "many"])


# ------------------------------------------------------------------ CPU fallback

@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_fallback_warns_and_copies(no_cuda, caplog):
    cfg = load_config(str(QUICKSTART_CONFIG), ["MODEL.DEVICE", "cuda:1"])
    cfg.freeze()
    with caplog.at_level(logging.WARNING, logger="mask_former.config"):
        on_cpu = cpu_fallback(cfg)
    assert on_cpu.MODEL.DEVICE == "cpu" and on_cpu.is_frozen()
    assert cfg.MODEL.DEVICE == "cuda:1"  # the caller's config is left as it was
    assert [r.getMessage() for r in caplog.records] == [
        "MODEL.DEVICE is cuda:1 but CUDA is not available: running on the CPU"]
    assert cpu_fallback(on_cpu) is on_cpu  # nothing to do on the CPU


def test_entry_points_fall_back_to_the_cpu(no_cuda, tmp_path):
    opts = ["MODEL.DEVICE", "cuda", "MODEL.WEIGHTS", ""]
    train_args = train_net.argument_parser().parse_args(
        ["--config-file", str(QUICKSTART_CONFIG), "OUTPUT_DIR", str(tmp_path)] + opts)
    assert train_net.setup(train_args).MODEL.DEVICE == "cpu"
    analyze_args = analyze_model.parse_args(["--config-file", str(QUICKSTART_CONFIG),
                                             "--tasks", "parameter"] + opts)
    assert analyze_model.setup(analyze_args).MODEL.DEVICE == "cpu"
    benchmark_args = benchmark.parse_args(["--config-file", str(QUICKSTART_CONFIG),
                                           "--device", "cuda"])
    assert benchmark.setup_cfg(benchmark_args).MODEL.DEVICE == "cpu"
    assert benchmark_args.device == "cpu"
