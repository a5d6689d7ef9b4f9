"""ONNX and TorchScript export (mask_former/export, tools/export_model.py) of tiny MaskFormers with
the R50 and Swin-T layouts and of tiny Mask2Formers: the exported graph is the eager model's
inference, and onnxruntime (or torch.jit.load) gives PyTorch's numbers at sizes other than the
traced one."""
import importlib.util

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import REPO_ROOT
from tiny_models import tiny_config, tiny_mask2former_config
from mask_former.export import (
    EXPORTERS,
    OUTPUT_NAMES,
    RUNNERS,
    ExportableMaskFormer,
    ExportError,
    check_export,
    check_sizes,
    export_metadata,
    read_export_metadata,
)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TRACE_SIZE = (83, 101)  # pads on both sides at every stride, so no branch is traced as a no-op
TOLERANCE = 1e-4


def _load_tool():
    spec = importlib.util.spec_from_file_location("export_model", REPO_ROOT / "tools" / "export_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def r50_config():
    return tiny_config()


def swin_tiny_config():
    """Swin-T's layout (depths 2-2-6-2, window 7), 24 channels wide."""
    cfg = tiny_config()
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = 24
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 4, 8]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.0
    return cfg


CONFIGS = {"r50": r50_config, "swin_t": swin_tiny_config}


def build_tiny(name: str):
    torch.manual_seed(0)
    cfg = CONFIGS[name]()
    model = build_model(cfg).eval()
    with torch.no_grad():
        # A random ResNet's features grow ~2x per residual block (res5 ~1e3 here): float32 noise
        # then reaches 1e-4 relative. Damping the residual branches, as trained networks have
        # them, keeps the features O(10) and the comparison about the export, not the rounding.
        for module_name, module in model.backbone.named_modules():
            if module_name.endswith("conv3"):
                module.norm.weight.mul_(0.2)
    return cfg, model


@pytest.fixture(scope="module", params=["r50", "swin_t"])
def tiny(request):
    cfg, model = build_tiny(request.param)
    return request.param, cfg, model, ExportableMaskFormer.from_model(model)


def random_image(height, width, seed=0):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


# ------------------------------------------------------------------ the exported module

def test_exportable_model_gives_the_models_own_inference(tiny):
    _, cfg, model, module = tiny
    image = random_image(70, 45)
    with torch.no_grad():
        pred_logits, pred_masks, sem_seg = module(image)
        expected = model([{"image": image[0]}])[0]["sem_seg"]
        head = model.network(model.preprocess_images([{"image": image[0]}]).tensor)
    num_queries, num_classes = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES, 5
    assert pred_logits.shape == (1, num_queries, num_classes + 1)
    assert pred_masks.shape == (1, num_queries, 96 // 4, 64 // 4)  # padded to 96 x 64
    assert sem_seg.shape == (1, num_classes, 70, 45)
    torch.testing.assert_close(pred_logits, head["pred_logits"], rtol=0, atol=0)
    torch.testing.assert_close(sem_seg[0], expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ formats

@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """The tiny model written in each format: {format: path}."""
    name, cfg, _, module = tiny
    folder = tmp_path_factory.mktemp(name)
    paths = {}
    for export_format, export in EXPORTERS.items():
        paths[export_format] = str(folder / f"model.{export_format}")
        export(module, random_image(*TRACE_SIZE), paths[export_format], export_metadata(cfg))
    return paths


@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_export_matches_pytorch_at_two_sizes(tiny, exported, export_format):
    module, path = tiny[3], exported[export_format]
    sizes = check_sizes(TRACE_SIZE, module.size_divisibility)
    assert sizes == [(83, 101), (132, 72)]
    results = check_export(module, RUNNERS[export_format](path), sizes)
    for size, errors in results.items():
        assert set(errors) == set(OUTPUT_NAMES)
        assert max(errors.values()) < TOLERANCE, (size, errors)
    assert read_export_metadata(path, export_format) == {"input_format": "BGR", "num_classes": "5"}


def test_onnx_graph_has_dynamic_height_and_width(exported):
    import onnx

    graph = onnx.load(exported["onnx"]).graph

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [i.name for i in graph.input] == ["image"]
    assert dims(graph.input[0]) == [1, 3, "height", "width"]
    # ONNX's shape inference leaves the batch and query counts of the outputs as symbols; their
    # values are checked by running the graph (test_export_matches_pytorch_at_two_sizes).
    outputs = {o.name: dims(o) for o in graph.output}
    assert list(outputs) == list(OUTPUT_NAMES)
    assert outputs["pred_logits"][2] == 6
    assert outputs["pred_masks"][2:] == ["mask_height", "mask_width"]
    assert outputs["sem_seg"][1:] == [5, "height", "width"]


@pytest.mark.slow
def test_dynamo_onnx_export_of_r50_matches_pytorch(tmp_path):
    pytest.importorskip("onnxscript")
    cfg, model = build_tiny("r50")
    module = ExportableMaskFormer.from_model(model)
    path = str(tmp_path / "dynamo.onnx")
    EXPORTERS["onnx"](module, random_image(*TRACE_SIZE), path, export_metadata(cfg), dynamo=True)
    results = check_export(module, RUNNERS["onnx"](path), check_sizes(TRACE_SIZE, 32))
    assert max(max(errors.values()) for errors in results.values()) < TOLERANCE


def test_runner_refuses_what_is_not_an_export(tmp_path):
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("not a model")
    with pytest.raises(ExportError, match="model.onnx: onnxruntime cannot load it"):
        RUNNERS["onnx"](str(not_onnx))
    with pytest.raises(ExportError, match="model.onnx: not an ONNX model"):
        read_export_metadata(str(not_onnx))
    with pytest.raises(ExportError, match="missing.onnx: no such file"):
        RUNNERS["onnx"](str(tmp_path / "missing.onnx"))


# ------------------------------------------------------------------ tools/export_model.py

@pytest.fixture(scope="module")
def r50_files(tmp_path_factory):
    """A config file and a checkpoint of the tiny R50."""
    cfg, model = build_tiny("r50")
    folder = tmp_path_factory.mktemp("r50")
    (folder / "config.yaml").write_text(cfg.dump())
    DetectionCheckpointer(model, save_dir=str(folder)).save("model")
    return folder / "config.yaml", folder / "model.pth", ExportableMaskFormer.from_model(model)


def test_export_tool_writes_a_file_that_matches_pytorch(tmp_path, r50_files, caplog):
    config, weights, module = r50_files
    output = tmp_path / "out" / "model.onnx"
    status = _load_tool().main(["--config-file", str(config), "--output", str(output),
                                "--sample-size", "83", "101", "MODEL.WEIGHTS", str(weights)])
    assert status == 0
    assert output.is_file() and not (tmp_path / "out" / "model.onnx.partial").exists()
    assert "onnx vs PyTorch at 132x72: relative error pred_logits" in caplog.text
    results = check_export(module, RUNNERS["onnx"](str(output)), [(50, 150)], seed=3)
    assert max(results[(50, 150)].values()) < TOLERANCE


@pytest.mark.parametrize("args, message", [
    ([], "MODEL.WEIGHTS is empty: there are no trained weights"),
    (["MODEL.WEIGHTS", "/nonexistent/model.pth"], "MODEL.WEIGHTS=/nonexistent/model.pth: no such file"),
    (["--format", "torchscript", "--dynamo", "MODEL.WEIGHTS", "{weights}"],
     "--dynamo applies to --format onnx only"),
    (["MODEL.NO_SUCH_KEY", "1"], "unknown config key MODEL.NO_SUCH_KEY"),
])
def test_export_tool_refuses_in_one_line(tmp_path, r50_files, caplog, args, message):
    config, weights, _ = r50_files
    args = [a.replace("{weights}", str(weights)) for a in args]
    status = _load_tool().main(["--config-file", str(config), "--output",
                                str(tmp_path / "model.onnx")] + args)
    assert status == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0].getMessage()
    assert not (tmp_path / "model.onnx").exists()



# ------------------------------------------------------------------ Mask2Former

def official_tiny_mask2former():
    """The official tiny Mask2Former of the reference fixture (trained weights, R50 layout)."""
    from conftest import shared_path
    from helpers import config_from_yaml

    reference = torch.load(shared_path("reference", "m2f_universal_r50_tiny.pt"), weights_only=False)
    cfg = config_from_yaml(reference["config_yaml"])
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    model.load_state_dict(reference["state_dict"], strict=True)
    return cfg, model


@pytest.mark.needs_shared
@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_mask2former_export_matches_pytorch_at_two_sizes(tmp_path, export_format):
    """Its deformable attention (grid_sample over maps split by the levels' sizes) and masked
    attention export with those sizes as graph operations: one file gives PyTorch's numbers at
    the traced size and at one whose levels are all of other sizes."""
    cfg, model = official_tiny_mask2former()
    module = ExportableMaskFormer.from_model(model)
    path = str(tmp_path / f"m2f.{export_format}")
    EXPORTERS[export_format](module, random_image(*TRACE_SIZE), path, export_metadata(cfg))
    assert read_export_metadata(path, export_format) == export_metadata(cfg)
    sizes = check_sizes(TRACE_SIZE, module.size_divisibility)
    assert sizes == [(83, 101), (132, 72)]  # padded to 96 x 128 and 160 x 96
    results = check_export(module, RUNNERS[export_format](path), sizes)
    for size, errors in results.items():
        assert max(errors.values()) < TOLERANCE, (size, errors)


# The dynamo exporter's shape reasoning takes about a minute for this head on 2 shared cores.
@pytest.mark.slow
def test_dynamo_onnx_export_of_mask2former_matches_pytorch_at_two_sizes(tmp_path):
    """tiny_mask2former_config (untrained), one decoder layer per level, through torch.export
    with symbolic sizes."""
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    cfg = tiny_mask2former_config()
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 3
    module = ExportableMaskFormer.from_model(build_model(cfg))
    path = str(tmp_path / "m2f_dynamo.onnx")
    EXPORTERS["onnx"](module, random_image(*TRACE_SIZE), path, export_metadata(cfg), dynamo=True)
    results = check_export(module, RUNNERS["onnx"](path), check_sizes(TRACE_SIZE, 32))
    for size, errors in results.items():
        assert max(errors.values()) < TOLERANCE, (size, errors)
