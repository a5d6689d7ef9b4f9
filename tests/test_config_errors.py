"""What a bad config gets: an error naming the culprit."""
import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from mask_former import add_mask_former_config

from tiny_models import tiny_config


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("MODEL:\n  MASK_FORMER:\n    NUM_QUERIES: 50\n")
    cfg = get_cfg()
    add_mask_former_config(cfg)
    with pytest.raises(KeyError, match="MODEL.MASK_FORMER.NUM_QUERIES"):
        cfg.merge_from_file(str(path))


def test_unregistered_backbone_is_named():
    cfg = tiny_config()
    cfg.MODEL.BACKBONE.NAME = "NoSuchBackbone"
    with pytest.raises(KeyError, match="NoSuchBackbone"):
        build_model(cfg)


def test_unregistered_pixel_decoder_is_named():
    cfg = tiny_config()
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "NoSuchPixelDecoder"
    with pytest.raises(KeyError, match="PIXEL_DECODER_NAME='NoSuchPixelDecoder'.*BasePixelDecoder"):
        build_model(cfg)


def test_unregistered_head_is_named():
    cfg = tiny_config()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "NoSuchHead"
    with pytest.raises(KeyError, match="NoSuchHead"):
        build_model(cfg)


def test_transformer_in_feature_not_produced_by_backbone():
    cfg = tiny_config()
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res6"
    with pytest.raises(ValueError, match="TRANSFORMER_IN_FEATURE='res6'.*res5"):
        build_model(cfg)


def test_in_features_not_produced_by_backbone():
    cfg = tiny_config()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    with pytest.raises(ValueError, match=r"IN_FEATURES names \['res2'\]"):
        build_model(cfg)


def test_transformer_encoder_feature_needs_an_encoder_pixel_decoder():
    cfg = tiny_config()
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "transformer_encoder"
    with pytest.raises(ValueError, match="TransformerEncoderPixelDecoder.*PIXEL_DECODER_NAME is BasePixelDecoder"):
        build_model(cfg)
