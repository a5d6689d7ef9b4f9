"""Weight conversion and the errors a user gets when MODEL.WEIGHTS cannot be read."""
import importlib.util
import pickle
import types

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_resnet_backbone

from conftest import REPO_ROOT
from mask_former.weights import check_weights


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    with pytest.raises(FileNotFoundError, match="no such file.*convert-torchvision-to-d2"):
        check_weights(str(tmp_path / "missing.pkl"))


def test_unfetchable_weights_say_how_to_proceed(monkeypatch):
    from detectron2.utils.file_io import PathManager

    def offline(path, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(PathManager, "get_local_path", offline)
    with pytest.raises(RuntimeError, match="could not be fetched.*ConnectionError.*MODEL.WEIGHTS"):
        check_weights("detectron2://ImageNetPretrained/torchvision/R-50.pkl")


def test_empty_weights_mean_from_scratch():
    check_weights("")
