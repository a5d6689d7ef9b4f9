"""tools/analyze_model.py: parameter and FLOP counts of the official ADE20K R50 recipe (CPU)."""
import importlib.util

import pytest

from conftest import REPO_ROOT

ADE20K_R50 = "configs/ade20k/maskformer_R50.yaml"
# MaskFormer R50 on ADE20K-150: the official model zoo lists 41M parameters. This is our model's
# exact count (backbone 23,454,912 + head 17,799,831), identical to the official architecture's.
ADE20K_R50_PARAMETERS = 41_254_743
# fvcore's count (multiply-adds) on a synthetic 128x128 input. At the 512x512 test size it is
# 55.1 (the official table: 53); the transformer decoder's ~1 GFLOPs do not shrink with the image.
ADE20K_R50_GFLOPS_128 = 4.42


def _load_tool():
    spec = importlib.util.spec_from_file_location("analyze_model",
                                                  REPO_ROOT / "tools" / "analyze_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analyze_model = _load_tool()


def test_words_after_the_tasks_are_config_overrides():
    args = analyze_model.parse_args(
        ["--config-file", ADE20K_R50, "--tasks", "parameter", "flop", "MODEL.WEIGHTS", ""]
    )
    assert args.tasks == ["parameter", "flop"]
    assert args.opts == ["MODEL.WEIGHTS", ""]


def test_unknown_task_is_refused():
    with pytest.raises(SystemExit):
        analyze_model.parse_args(["--config-file", ADE20K_R50, "--tasks", "flops"])


def test_parameter_count_of_ade20k_r50():
    args = analyze_model.parse_args(["--config-file", ADE20K_R50, "--tasks", "parameter",
                                     "MODEL.WEIGHTS", ""])
    results = analyze_model.analyze(analyze_model.setup(args), args.tasks)
    assert results["parameter"] == ADE20K_R50_PARAMETERS
    assert results["parameter"] == pytest.approx(41.3e6, rel=0.01)


def test_flop_task_falls_back_to_a_synthetic_input(capsys):
    # The ADE20K images are not on disk in the test environment (a missing dataset name makes
    # sure of it where they are): the count runs on a synthetic test-size input.
    args = analyze_model.parse_args(
        ["--config-file", ADE20K_R50, "--tasks", "flop", "MODEL.WEIGHTS", "",
         "INPUT.MIN_SIZE_TEST", "128", "DATASETS.TEST", "('no_such_dataset',)"]
    )
    analyze_model.configure_logging()
    results = analyze_model.analyze(analyze_model.setup(args), args.tasks, args.num_inputs)
    out = capsys.readouterr().out
    assert "using a synthetic 128x128 input instead" in out
    assert "Total GFlops: " in out
    assert results["flop"]["num_inputs"] == 1
    assert results["flop"]["gflops"] == pytest.approx(ADE20K_R50_GFLOPS_128, rel=0.01)
    assert results["flop"]["by_operator"]["conv"] > 0.5 * results["flop"]["gflops"]


def test_cli_reports_parameters(capsys):
    argv = ["--config-file", ADE20K_R50, "--tasks", "parameter", "MODEL.WEIGHTS", ""]
    assert analyze_model.main(argv) == 0
    assert "Total parameters: 41,254,743 (41.3M)" in capsys.readouterr().out


def test_missing_config_file_is_reported(capsys):
    assert analyze_model.main(["--config-file", "no/such.yaml", "--tasks", "parameter"]) == 1
    assert "config file no/such.yaml not found" in capsys.readouterr().out
