"""A downstream detectron2 project extends MaskFormer through the registries."""
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import BACKBONE_REGISTRY, SEM_SEG_HEADS_REGISTRY, Backbone, build_model
from torch import nn

from mask_former.modeling import PIXEL_DECODER_REGISTRY, TRANSFORMER_DECODER_REGISTRY

from tiny_models import tiny_batch, tiny_config


@BACKBONE_REGISTRY.register()
class DownstreamConvBackbone(Backbone):
    """Four strided convs: res2..res5 at strides 4..32."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        channels = [8, 16, 24, 32]
        self.stem = nn.Conv2d(input_shape.channels, channels[0], 3, stride=4, padding=1)
        self.stages = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self._out_features = ["res2", "res3", "res4", "res5"]
        self._out_feature_channels = dict(zip(self._out_features, channels))
        self._out_feature_strides = dict(zip(self._out_features, [4, 8, 16, 32]))

    def forward(self, x):
        outputs = {"res2": F.relu(self.stem(x))}
        for name, stage in zip(self._out_features[1:], self.stages):
            outputs[name] = F.relu(stage(list(outputs.values())[-1]))
        return outputs


@PIXEL_DECODER_REGISTRY.register()
class DownstreamPixelDecoder(nn.Module):
    """Projects res2 to the mask dimension: the simplest possible pixel decoder."""

    @configurable
    def __init__(self, input_shape, *, mask_dim):
        super().__init__()
        self.proj = nn.Conv2d(input_shape["res2"].channels, mask_dim, 1)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {"input_shape": input_shape, "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM}

    def forward_features(self, features):
        return self.proj(features["res2"]), None


@SEM_SEG_HEADS_REGISTRY.register()
class DownstreamPixelDecoderInHeads(DownstreamPixelDecoder):
    """Where the official code and its downstream projects register pixel decoders."""


def build_downstream_model(pixel_decoder_name):
    cfg = tiny_config()
    cfg.MODEL.BACKBONE.NAME = "DownstreamConvBackbone"
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = pixel_decoder_name
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
    return build_model(cfg)


def training_step(model):
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model(tiny_batch())
    total = sum(losses.values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return losses, total, before


def test_downstream_backbone_and_pixel_decoder_train():
    model = build_downstream_model("DownstreamPixelDecoder")
    assert isinstance(model.backbone, DownstreamConvBackbone)
    assert isinstance(model.sem_seg_head.pixel_decoder, DownstreamPixelDecoder)
    losses, total, before = training_step(model)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"} == set(losses)
    assert torch.isfinite(total)
    after = model.state_dict()
    assert not torch.equal(before["sem_seg_head.pixel_decoder.proj.weight"],
                           after["sem_seg_head.pixel_decoder.proj.weight"])
    assert not torch.equal(before["backbone.stem.weight"], after["backbone.stem.weight"])


def test_pixel_decoder_registered_as_sem_seg_head_is_found():
    model = build_downstream_model("DownstreamPixelDecoderInHeads")
    assert type(model.sem_seg_head.pixel_decoder) is DownstreamPixelDecoderInHeads
    _, total, _ = training_step(model)
    assert torch.isfinite(total)


@PIXEL_DECODER_REGISTRY.register()
class DownstreamMultiScalePixelDecoder(nn.Module):
    """Mask features from res2, and res5, res4, res3 projected as the multi-scale maps."""

    @configurable
    def __init__(self, input_shape, *, conv_dim, mask_dim):
        super().__init__()
        self.proj = nn.Conv2d(input_shape["res2"].channels, mask_dim, 1)
        self.scales = nn.ModuleDict({name: nn.Conv2d(input_shape[name].channels, conv_dim, 1)
                                     for name in ("res5", "res4", "res3")})

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {"input_shape": input_shape, "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
                "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM}

    def forward_features(self, features):
        multi_scale = [conv(features[name]) for name, conv in self.scales.items()]
        return self.proj(features["res2"]), None, multi_scale


@TRANSFORMER_DECODER_REGISTRY.register()
class DownstreamTransformerDecoder(nn.Module):
    """Queries plus the maps' mean features; one auxiliary prediction, from the queries alone."""

    @configurable
    def __init__(self, in_channels, mask_classification=True, *, num_classes, num_queries,
                 mask_dim):
        super().__init__()
        self.query_feat = nn.Embedding(num_queries, in_channels)
        self.class_embed = nn.Linear(in_channels, num_classes + 1)
        self.mask_embed = nn.Linear(in_channels, mask_dim)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        return {"in_channels": in_channels, "mask_classification": mask_classification,
                "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
                "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM}

    def predict(self, queries, mask_features):
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), mask_features)
        return {"pred_logits": self.class_embed(queries), "pred_masks": masks}

    def forward(self, x, mask_features, mask=None):
        queries = self.query_feat.weight.expand(mask_features.shape[0], -1, -1)
        aux = self.predict(queries, mask_features)
        context = sum(level.mean((2, 3)) for level in x)[:, None]  # (B, 1, C)
        return {**self.predict(queries + context, mask_features), "aux_outputs": [aux]}


def test_downstream_transformer_decoder_and_multi_scale_pixel_decoder_train():
    cfg = tiny_config()
    cfg.MODEL.BACKBONE.NAME = "DownstreamConvBackbone"
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "DownstreamMultiScalePixelDecoder"
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "DownstreamTransformerDecoder"
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    model = build_model(cfg)
    head = model.sem_seg_head
    assert isinstance(head.pixel_decoder, DownstreamMultiScalePixelDecoder)
    assert isinstance(head.predictor, DownstreamTransformerDecoder)
    # The decoder reads the pixel decoder's maps, of CONVS_DIM channels.
    assert head.predictor.query_feat.weight.shape == (8, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM)
    losses, total, before = training_step(model)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"} == set(losses)
    assert torch.isfinite(total)
    after = model.state_dict()
    for name in ("sem_seg_head.pixel_decoder.scales.res3.weight",
                 "sem_seg_head.predictor.query_feat.weight", "backbone.stem.weight"):
        assert not torch.equal(before[name], after[name]), name
