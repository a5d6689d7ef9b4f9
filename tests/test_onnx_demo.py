"""demo/demo.py --onnx: the quick-start model exported to ONNX and run through onnxruntime draws
what the torch model draws (semantic and panoptic), with no torch model built."""
import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import REPO_ROOT
from helpers import load_script
from tiny_models import QUICKSTART_CONFIG
from mask_former.config import load_config
from mask_former.export import EXPORTERS, ExportableMaskFormer, export_metadata

pytest.importorskip("onnxruntime")


demo = load_script(REPO_ROOT / "demo" / "demo.py", "maskformer_demo")  # puts demo/ on sys.path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(weights, ONNX file) of an untrained quick-start model whose class biases favour "sky"
    and "circle" over "no object", so that panoptic inference finds segments."""
    cfg = load_config(str(QUICKSTART_CONFIG))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        bias = model.sem_seg_head.predictor.class_embed.bias
        bias.zero_()
        bias[0] = bias[2] = 4.0
    folder = tmp_path_factory.mktemp("onnx_demo")
    DetectionCheckpointer(model, save_dir=str(folder)).save("model")
    path = folder / "model.onnx"
    example = torch.rand(1, 3, 128, 171, generator=torch.Generator().manual_seed(0)) * 255
    EXPORTERS["onnx"](ExportableMaskFormer.from_model(model), example, str(path),
                      export_metadata(cfg))
    return str(folder / "model.pth"), str(path)


def run_demo(capsys, *args):
    status = demo.main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


@pytest.mark.parametrize("panoptic", [True, False], ids=["panoptic", "semantic"])
def test_onnx_demo_draws_what_the_torch_demo_draws(tmp_path, capsys, exported, monkeypatch,
                                                   panoptic):
    weights, onnx_file = exported
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    opts = ["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", str(panoptic)]
    status, torch_log = run_demo(capsys, "--input", str(source), "--output",
                                 str(tmp_path / "torch.png"), "--confidence-threshold", "0.0",
                                 "--opts", "MODEL.WEIGHTS", weights, *opts)
    assert status == 0

    def no_torch_model(*args, **kwargs):
        raise AssertionError("the --onnx demo built a torch model")

    monkeypatch.setattr("detectron2.engine.defaults.build_model", no_torch_model)
    status, onnx_log = run_demo(capsys, "--input", str(source), "--output",
                                str(tmp_path / "onnx.png"), "--confidence-threshold", "0.0",
                                "--onnx", onnx_file, "--opts", *opts)
    assert status == 0

    def described(log):
        return log.split("photo.png: ")[1].split(" in ")[0]

    assert described(onnx_log) == described(torch_log)
    assert ("segment" in described(onnx_log)) == panoptic
    torch_drawing = cv2.imread(str(tmp_path / "torch.png")).astype(int)
    onnx_drawing = cv2.imread(str(tmp_path / "onnx.png")).astype(int)
    assert np.abs(torch_drawing - onnx_drawing).max(-1).astype(bool).mean() < 0.001


def test_onnx_demo_refuses_an_export_of_another_config(tmp_path, capsys, exported):
    _, onnx_file = exported
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), np.zeros((32, 32, 3), np.uint8))
    status, err = run_demo(capsys, "--input", str(source), "--output", str(tmp_path / "out.png"),
                           "--onnx", onnx_file, "--opts", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7")
    assert status == 1
    assert "was exported with num_classes '5' but the config has '7'" in err
