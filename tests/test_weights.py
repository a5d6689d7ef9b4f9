"""Weight conversion, and MODEL.WEIGHTS and checkpoints as MaskFormerCheckpointer loads them:
one line for a file that cannot be used, one summary for a partial checkpoint, refusal of
weights that do not fit the model where the model must be complete (evaluation, demo), and the
fallback of --resume to the newest complete checkpoint."""
import copy
import logging
import os
import pickle
import sys
import types

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model, build_resnet_backbone

from conftest import REPO_ROOT, shared_path
from helpers import config_from_yaml, load_script
from mask_former.weights import (MaskFormerCheckpointer, UnreadableWeightsError, WeightsError,
                                 WeightsNotFoundError, check_weights)
from tiny_models import QUICKSTART_CONFIG, save_quickstart_weights, tiny_config

sys.path.insert(0, str(REPO_ROOT))
import train_net  # noqa: E402


def load_tool(name):
    return load_script(REPO_ROOT / "tools" / f"{name}.py", name.replace("-", "_"))


@torch.no_grad()
def test_torchvision_resnet_converts_to_identical_detectron2_backbone(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    for module in reference.modules():  # non-trivial BN statistics, to catch a wrong mapping
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.1, 0.1)
    reference.eval()
    checkpoint = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), checkpoint)
    converted = tmp_path / "R-50.pkl"
    tool = load_tool("convert-torchvision-to-d2")
    assert tool.main([str(checkpoint), str(converted)]) == 0

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    DetectionCheckpointer(backbone).load(str(converted))
    x = torch.randn(1, 3, 64, 64)
    expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)
    assert torch.allclose(backbone(x)["res5"], expected, rtol=1e-4, atol=1e-5)


def test_swin_conversion_keeps_names(tmp_path):
    checkpoint = tmp_path / "swin.pth"
    torch.save({"model": {"patch_embed.proj.weight": torch.ones(2, 3, 4, 4)}}, checkpoint)
    converted = tmp_path / "swin.pkl"
    assert load_tool("convert-pretrained-swin-model-to-d2").main([str(checkpoint), str(converted)]) == 0
    with open(converted, "rb") as f:
        data = pickle.load(f)
    assert list(data["model"]) == ["patch_embed.proj.weight"]
    assert data["model"]["patch_embed.proj.weight"].shape == (2, 3, 4, 4)


def test_converter_reports_unreadable_input(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert load_tool("convert-torchvision-to-d2").main([str(bad), str(tmp_path / "out.pkl")]) == 1
    assert capsys.readouterr().err == (f"error: cannot read {bad} as a checkpoint (Unsupported "
                                       "operand 110)\n")


def _run_converter(capsys, tool, *args):
    status = load_tool(tool).main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("content, message", [
    ({"model": {"patch_embed.proj.weight": torch.ones(1)}},
     "{path} does not look like a torchvision ResNet: it has no conv1.weight (its first entry is "
     "patch_embed.proj.weight)"),
    ({"conv1.weight": torch.ones(1), "epoch": 3},
     "{path}: not a state dict of tensors (1 of its 2 entries are not tensors, e.g. 'epoch' of "
     "type int)"),
    ([torch.ones(1)], "{path}: no state dict in it (a list)"),
], ids=["other_model", "not_tensors", "a_list"])
def test_converter_refuses_what_it_cannot_convert(tmp_path, capsys, content, message):
    path = tmp_path / "checkpoint.pth"
    torch.save(content, path)
    status, out, err = _run_converter(capsys, "convert-torchvision-to-d2", path, tmp_path / "o.pkl")
    assert (status, out, err) == (1, "", "error: " + message.format(path=path) + "\n")
    assert not (tmp_path / "o.pkl").exists()


def test_converter_reports_unwritable_output_and_leaves_no_partial_file(tmp_path, capsys):
    checkpoint = tmp_path / "swin.pth"
    torch.save({"patch_embed.proj.weight": torch.ones(2)}, checkpoint)
    out = tmp_path / "missing_folder" / "swin.pkl"
    status, _, err = _run_converter(capsys, "convert-pretrained-swin-model-to-d2", checkpoint, out)
    assert status == 1
    assert err == f"error: cannot write {out} (No such file or directory)\n"
    status, _, err = _run_converter(capsys, "convert-pretrained-swin-model-to-d2", checkpoint,
                                    checkpoint)
    assert (status, err) == (1, f"error: {checkpoint} is the input: pass another output file\n")
    torch.load(checkpoint, weights_only=True)  # not overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swin.pth"]


def test_converter_writes_whole_files_only(tmp_path, monkeypatch, capsys):
    """An interrupted write leaves neither a partial output nor an old one half replaced."""
    from mask_former import checkpoint_conversion

    def interrupted(data, f):
        f.write(b"half")
        raise KeyboardInterrupt

    checkpoint = tmp_path / "swin.pth"
    torch.save({"patch_embed.proj.weight": torch.ones(2)}, checkpoint)
    out = tmp_path / "swin.pkl"
    out.write_bytes(b"previous")
    fake_pickle = types.SimpleNamespace(dump=interrupted, UnpicklingError=pickle.UnpicklingError)
    monkeypatch.setattr(checkpoint_conversion, "pickle", fake_pickle)
    with pytest.raises(KeyboardInterrupt):
        _run_converter(capsys, "convert-pretrained-swin-model-to-d2", checkpoint, out)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swin.pkl", "swin.pth"]


def test_missing_weight_file_says_how_to_proceed(tmp_path):
    path = str(tmp_path / "missing.pkl")
    with pytest.raises(WeightsNotFoundError) as error:
        check_weights(path)
    assert str(error.value).startswith(f"MODEL.WEIGHTS={path}: no such file. To proceed: ")
    assert "convert-torchvision-to-d2" in str(error.value)
    assert isinstance(error.value, FileNotFoundError)


def test_unfetchable_weights_say_how_to_proceed(monkeypatch):
    from detectron2.utils.file_io import PathManager

    def offline(path, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(PathManager, "get_local_path", offline)
    url = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    with pytest.raises(WeightsNotFoundError) as error:
        check_weights(url)
    assert str(error.value).startswith(
        f"MODEL.WEIGHTS={url} could not be fetched (ConnectionError: network unreachable). ")


def test_empty_weights_mean_from_scratch():
    assert check_weights("") == ""  # nothing to check: training starts from scratch
    torch.manual_seed(0)
    model = build_model(tiny_config())
    before = copy.deepcopy(model.state_dict())
    assert MaskFormerCheckpointer(model, allow_partial=True).load("") == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # Evaluation needs trained weights.
    with pytest.raises(WeightsError) as error:
        MaskFormerCheckpointer(model).load("")
    assert str(error.value) == NO_WEIGHTS


NO_WEIGHTS = ("MODEL.WEIGHTS is empty: there are no trained weights to use (a randomly "
              "initialised model would be); pass MODEL.WEIGHTS /path/to/model_final.pth")


def run_train_net(capsys, *argv):
    """train_net.py's exit status and its error lines."""
    status = train_net.cli(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, [line for line in err.splitlines() if line.startswith("train_net.py: error: ")]


def test_eval_only_without_weights_is_refused(tmp_path, capsys):
    status, errors = run_train_net(capsys, "--config-file", str(QUICKSTART_CONFIG), "--eval-only",
                                   "OUTPUT_DIR", str(tmp_path))
    assert status == 1
    assert errors == ["train_net.py: error: " + NO_WEIGHTS]
    assert not os.listdir(tmp_path)  # refused before anything is set up


@pytest.mark.needs_shared
def test_eval_only_refuses_weights_of_another_architecture(tmp_path, capsys, monkeypatch):
    """The quick-start model under the CamVid R50 config: refused, with counts and names."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(shared_path()))
    weights = save_quickstart_weights(tmp_path / "quickstart.pth")
    status, errors = run_train_net(
        capsys, "--config-file", str(REPO_ROOT / "configs/camvid/maskformer_R50.yaml"),
        "--eval-only", "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "eval"))
    assert status == 1
    assert errors == [
        f"train_net.py: error: {weights} does not fit the model of this config: 53 of the model's "
        "463 weights loaded; 54 are not in the checkpoint (sem_seg_head.predictor.transformer."
        "decoder.layers.3.linear1.weight, sem_seg_head.predictor.transformer.decoder.layers.3."
        "linear1.bias, sem_seg_head.predictor.transformer.decoder.layers.3.linear2.weight, ...) "
        "and 356 have another shape (backbone.stem.conv1.weight: (32, 3, 7, 7) in the checkpoint, "
        "(64, 3, 7, 7) in the model, backbone.stem.conv1.norm.weight: (32,) in the checkpoint, "
        "(64,) in the model, backbone.stem.conv1.norm.bias: (32,) in the checkpoint, (64,) in the "
        "model, ...). Use the config the weights were trained with, or weights trained with this one."
    ]


def write_garbage_pkl(path):
    path.write_bytes(b"\x80\x04garbage, not a pickle")


def write_truncated_pth(path):
    save_quickstart_weights(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("name, write, reason", [
    ("garbage.pkl", write_garbage_pkl, "UnpicklingError: pickle data was truncated"),
    ("truncated.pth", write_truncated_pth,
     "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory"),
])
def test_unreadable_weights_are_one_line(tmp_path, capsys, name, write, reason):
    path = tmp_path / name
    write(path)
    status, errors = run_train_net(capsys, "--config-file", str(QUICKSTART_CONFIG), "--eval-only",
                                   "MODEL.WEIGHTS", str(path), "OUTPUT_DIR", str(tmp_path / "eval"))
    assert status == 1
    assert errors == [f"train_net.py: error: {path}: not a readable checkpoint, perhaps truncated "
                      f"or corrupt ({reason})"]


def test_pickle_without_weights_is_refused(tmp_path):
    path = tmp_path / "notes.pkl"
    with open(path, "wb") as f:
        pickle.dump({"comment": "not weights"}, f)
    with pytest.raises(UnreadableWeightsError) as error:
        MaskFormerCheckpointer(build_model(tiny_config())).load(str(path))
    assert str(error.value) == (f"{path}: not a checkpoint of model weights (expected a state dict "
                                "of tensors, or a dict with one under 'model')")


def test_partial_checkpoint_loads_for_training_with_one_summary_warning(tmp_path, caplog):
    """A model with another number of classes: everything but the class layer loads."""
    torch.manual_seed(0)
    source = build_model(tiny_config(num_classes=7))
    path = tmp_path / "seven_classes.pth"
    torch.save({"model": source.state_dict()}, path)
    torch.manual_seed(1)
    model = build_model(tiny_config(num_classes=5))
    initial_class_weight = model.sem_seg_head.predictor.class_embed.weight.detach().clone()
    with caplog.at_level(logging.INFO):
        MaskFormerCheckpointer(model, allow_partial=True).load(str(path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"{path}: 335 of the model's 338 weights loaded; 3 have another shape (sem_seg_head."
        "predictor.class_embed.weight: (8, 32) in the checkpoint, (6, 32) in the model, "
        "sem_seg_head.predictor.class_embed.bias: (8,) in the checkpoint, (6,) in the model, "
        "criterion.empty_weight: (8,) in the checkpoint, (6,) in the model); "
        "those keep their initial values"]
    assert torch.equal(model.sem_seg_head.predictor.class_embed.weight, initial_class_weight)
    assert torch.equal(model.backbone.stem.conv1.weight, source.backbone.stem.conv1.weight)
    # Evaluation refuses the same checkpoint.
    with pytest.raises(WeightsError, match=r"does not fit the model of this config: 335 of the "
                                           r"model's 338 weights loaded; 3 have another shape"):
        MaskFormerCheckpointer(model).load(str(path))


def test_backbone_weights_are_refused_for_evaluation_with_a_hint(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config())
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}, path)
    with pytest.raises(WeightsError) as error:
        MaskFormerCheckpointer(model).load(str(path))
    assert "It holds no segmentation head (sem_seg_head.*) weights: backbone weights are a " \
           "starting point for training, not a segmentation model." in str(error.value)


def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path, caplog):
    torch.manual_seed(0)
    model = build_model(tiny_config())
    saver = DetectionCheckpointer(model, save_dir=str(tmp_path))
    saver.save("model_0000009", iteration=9)
    saved_at_9 = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model.backbone.stem.conv1.weight.add_(1.0)
    saver.save("model_0000019", iteration=19)  # last_checkpoint now names it
    newest = tmp_path / "model_0000019.pth"
    newest.write_bytes(newest.read_bytes()[:1000])  # a save cut short

    torch.manual_seed(1)
    resumed = build_model(tiny_config())
    with caplog.at_level(logging.WARNING, logger="mask_former.weights"):
        extra = MaskFormerCheckpointer(resumed, save_dir=str(tmp_path), allow_partial=True) \
            .resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    assert all(torch.equal(saved_at_9[k], v) for k, v in resumed.state_dict().items())
    assert [r.getMessage() for r in caplog.records] == [
        f"--resume: {newest} (named by last_checkpoint) is truncated or corrupt; resuming from "
        f"{tmp_path / 'model_0000009.pth'}, the newest complete checkpoint"]

    # Without a complete one, --resume stops with one line.
    (tmp_path / "model_0000009.pth").unlink()
    with pytest.raises(UnreadableWeightsError) as error:
        MaskFormerCheckpointer(resumed, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert str(error.value) == (
        f"--resume: {tmp_path / 'last_checkpoint'} names {newest}, which is truncated or corrupt, "
        f"and {tmp_path} holds no other complete checkpoint; start again without --resume (with a "
        "new OUTPUT_DIR, or --overwrite)")


@pytest.mark.needs_shared
def test_official_model_zoo_pkl_loads_completely(tmp_path):
    """An official model-zoo .pkl (detectron2 format: numpy arrays, pixel decoder directly under
    sem_seg_head.) loads into the model of its config with nothing missing."""
    reference = torch.load(shared_path("reference", "semantic_r50_tiny.pt"), weights_only=False)
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in reference["state_dict"].items()},
                     "__author__": "official"}, f)
    model = build_model(config_from_yaml(reference["config_yaml"]))
    MaskFormerCheckpointer(model).load(str(path))  # refuses anything incomplete
    expected = build_model(config_from_yaml(reference["config_yaml"]))
    expected.load_state_dict(copy.deepcopy(reference["state_dict"]), strict=True)
    for key, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
