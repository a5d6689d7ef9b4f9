"""tools/convert-hf-to-d2.py on tiny random transformers MaskFormers (ResNet and Swin backbones),
built from transformers' own config classes and saved with save_pretrained: the converted model
gives transformers' class and mask logits, and the demo runs it with its class names."""
import json

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from conftest import REPO_ROOT
from helpers import load_script, relative_error
from mask_former.config import load_config

transformers = pytest.importorskip("transformers")

CLASS_NAMES = ["road", "sky", "tree", "car", "person"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


convert_tool = load_script(REPO_ROOT / "tools/convert-hf-to-d2.py", "convert_hf_to_d2")


def backbone_config(kind):
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if kind == "resnet":  # ResNet-50's layout, 16 to 256 channels
        return transformers.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64, 128, 256],
                                         depths=[3, 4, 6, 3], layer_type="bottleneck",
                                         out_features=stages)
    return transformers.MaskFormerSwinConfig(embed_dim=24, depths=[2, 2, 6, 2],
                                             num_heads=[1, 2, 4, 8], window_size=7,
                                             drop_path_rate=0.0, out_features=stages)


@pytest.fixture(scope="module", params=["resnet", "swin"])
def converted(request, tmp_path_factory):
    """(transformers model, its directory, the converted directory)."""
    torch.manual_seed(0)
    config = transformers.MaskFormerConfig(
        backbone_config=backbone_config(request.param), fpn_feature_size=32, mask_feature_size=32,
        decoder_config=dict(d_model=32, decoder_layers=2, decoder_attention_heads=4,
                            decoder_ffn_dim=64, num_queries=8, dropout=0.0),
        id2label=dict(enumerate(CLASS_NAMES)), label2id={n: i for i, n in enumerate(CLASS_NAMES)})
    hf_model = transformers.MaskFormerForInstanceSegmentation(config).eval()
    hf_dir = tmp_path_factory.mktemp(f"hf_{request.param}")
    hf_model.save_pretrained(str(hf_dir))
    (hf_dir / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "MaskFormerImageProcessor", "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": MEAN, "image_std": STD,
        "size": {"shortest_edge": 96, "longest_edge": 160}, "size_divisor": 32}))
    out_dir = tmp_path_factory.mktemp(f"d2_{request.param}")
    assert convert_tool.main([str(hf_dir), str(out_dir)]) == 0
    return hf_model, hf_dir, out_dir


def load_converted(out_dir):
    cfg = load_config(str(out_dir / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    checkpoint = torch.load(out_dir / "model.pth", weights_only=True)
    model.load_state_dict(checkpoint["model"], strict=True)
    return cfg, model


def test_converted_model_gives_transformers_logits(converted):
    hf_model, _, out_dir = converted
    _, model = load_converted(out_dir)
    pixel_values = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(pixel_values=pixel_values)
        outputs = model.network(pixel_values)
    assert outputs["pred_logits"].shape == (1, 8, 6)
    assert outputs["pred_masks"].shape == (1, 8, 24, 40)
    assert relative_error(outputs["pred_logits"], expected.class_queries_logits) < 1e-4
    assert relative_error(outputs["pred_masks"], expected.masks_queries_logits) < 1e-4


def test_converted_config_normalises_as_the_image_processor(converted):
    _, _, out_dir = converted
    cfg, model = load_converted(out_dir)
    assert cfg.INPUT.FORMAT == "RGB"
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (96, 160)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 5
    assert not cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    ours = model.preprocess_images([{"image": image}]).tensor[0]
    theirs = (image.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    metadata = json.loads((out_dir / "metadata.json").read_text())
    assert metadata["stuff_classes"] == CLASS_NAMES
    assert cfg.DATASETS.TEST == (metadata["name"],)


def test_demo_runs_the_converted_model_with_its_class_names(converted, tmp_path, capsys):
    import cv2

    _, _, out_dir = converted
    demo = load_script(REPO_ROOT / "demo/demo.py", "maskformer_demo")
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8))
    status = demo.main(["--config-file", str(out_dir / "config.yaml"), "--input", str(source),
                        "--output", str(tmp_path / "out.png"), "--opts", "MODEL.WEIGHTS",
                        str(out_dir / "model.pth")])
    err = capsys.readouterr().err
    assert status == 0, err
    described = err.split("photo.png: classes: ")[1].split(" in ")[0].split(", ")
    assert described and set(described) <= set(CLASS_NAMES)


def write_config(folder, config):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "missing: no such directory"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",
     "empty: not a Hugging Face checkpoint directory (no config.json)"),
    (lambda tmp: write_config(tmp / "bert", {"model_type": "bert", "architectures": ["BertModel"]}),
     "bert: BertModel is not a supported architecture (supported: "
     "Mask2FormerForUniversalSegmentation, MaskFormerForInstanceSegmentation)"),
])
def test_converter_refuses_in_one_line(tmp_path, caplog, make, message):
    status = convert_tool.main([str(make(tmp_path)), str(tmp_path / "out")])
    assert status == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0], errors


# ------------------------------------------------------------------ Mask2Former

def save_tiny_mask2former(folder):
    torch.manual_seed(0)
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone_config("resnet"), feature_size=32, mask_feature_size=32,
        hidden_dim=32, encoder_feedforward_dim=1024, dim_feedforward=64, encoder_layers=2,
        decoder_layers=4, num_attention_heads=4, num_queries=8, common_stride=4,
        id2label=dict(enumerate(CLASS_NAMES)), label2id={n: i for i, n in enumerate(CLASS_NAMES)})
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    model.save_pretrained(str(folder))
    return model


def test_converted_mask2former_gives_transformers_logits(tmp_path):
    hf_model = save_tiny_mask2former(tmp_path / "hf")
    assert convert_tool.main([str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
    _, model = load_converted(tmp_path / "out")
    pixel_values = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(pixel_values=pixel_values)
        outputs = model.network(pixel_values)
    assert relative_error(outputs["pred_logits"], expected.class_queries_logits) < 1e-4
    assert relative_error(outputs["pred_masks"], expected.masks_queries_logits) < 1e-4
