"""Property-based tests over input sizes: every backbone and pixel decoder, any image from 1 px to
about 1100 px a side (odd sizes, aspect ratios up to 8:1 either way), trains and infers, and
every output has the size asked for.

Hypothesis draws the sizes, derandomized (the same examples every run) and without an example
database, so that a run depends on the code only. A failure is reported with the smallest size
that still fails.
"""
import functools
import math
from typing import Tuple

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_backbone, build_model
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mask_former.modeling.pixel_decoder import PIXEL_DECODER_REGISTRY
from tiny_models import tiny_batch, tiny_config

BACKBONES = ["build_resnet_backbone", "D2SwinTransformer"]
# One name per pixel decoder, built with its config defaults; the transformer decoder reads its
# encoder output where the class sets `produces_encoder_features`, else res5; Mask2Former's
# pixel decoder comes with Mask2Former's decoder and point-sampled losses.
PIXEL_DECODERS = ["BasePixelDecoder", "TransformerEncoderPixelDecoder", "MSDeformAttnPixelDecoder"]

NUM_CLASSES = 5
MAX_SIDE = 1100
MAX_ASPECT = 8
# A second image of every inference batch, smaller or larger than the drawn one, so that each
# image is cropped out of a padded batch.
OTHER_IMAGE = (45, 37)

# Panoptic inference reads "thing" ids from the metadata of DATASETS.TRAIN[0].
METADATA_NAME = "test_input_sizes_panoptic_train"
THING_IDS = {0: 0, 1: 1}
if METADATA_NAME not in MetadataCatalog.list():
    MetadataCatalog.get(METADATA_NAME).set(thing_dataset_id_to_contiguous_id=THING_IDS)

Size = Tuple[int, int]
# Few examples per combination: the models are tiny, but a 1100 px side still costs about a
# second of training on 2 CPU cores.
quick = settings(derandomize=True, database=None, deadline=None, max_examples=4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Runs this module on one thread: its tensors are small, so a second thread only adds
    synchronisation (on the shared 2-core machine, 57 s of CPU and 42 to 130 s of wall time
    with two threads, 27 s and 25 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@st.composite
def image_sizes(draw) -> Size:
    """(height, width): sides from 1 to MAX_SIDE, the long one at most MAX_ASPECT times the
    short one, in either orientation."""
    long_side = draw(st.integers(1, MAX_SIDE))
    short_side = draw(st.integers(math.ceil(long_side / MAX_ASPECT), long_side))
    return (long_side, short_side) if draw(st.booleans()) else (short_side, long_side)


@st.composite
def image_and_output_sizes(draw) -> Tuple[Size, Size]:
    """An image size and the output size asked for: each side from half to twice the image's."""
    height, width = draw(image_sizes())
    output = tuple(draw(st.integers(max(1, side // 2), 2 * side)) for side in (height, width))
    return (height, width), output


def model_config(backbone: str, pixel_decoder: str, panoptic: bool = False):
    """tests/tiny_models.py's MaskFormer on the given backbone and pixel decoder."""
    cfg = tiny_config(NUM_CLASSES)
    # GroupNorm's 32 groups need two channels each: with 32, the 1x1 stride-32 map of any image
    # up to 32 px a side leaves one value per group, which torch's group_norm refuses.
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 64
    cfg.MODEL.BACKBONE.NAME = backbone
    # A tiny Swin; two blocks per stage, so that every stage has shifted windows.
    cfg.MODEL.SWIN.EMBED_DIM = 16
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 1, 2, 2]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = pixel_decoder
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    if pixel_decoder == "MSDeformAttnPixelDecoder":
        cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 4
        cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
        cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
        cfg.MODEL.MASK_FORMER.DEC_LAYERS = 4
        cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 64
    elif getattr(PIXEL_DECODER_REGISTRY.get(pixel_decoder), "produces_encoder_features", False):
        cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "transformer_encoder"
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = panoptic
    cfg.DATASETS.TRAIN = (METADATA_NAME,)
    return cfg


@functools.lru_cache(maxsize=None)
def model(backbone: str, pixel_decoder: str, panoptic: bool = False) -> torch.nn.Module:
    """Built once per combination; each test sets train or eval mode itself."""
    torch.manual_seed(0)
    return build_model(model_config(backbone, pixel_decoder, panoptic))


@functools.lru_cache(maxsize=None)
def backbone_alone(name: str):
    torch.manual_seed(0)
    return build_backbone(model_config(name, PIXEL_DECODERS[0])).eval()


def infer(net: torch.nn.Module, size: Size, output_size: Size) -> dict:
    """Inference on a batch of the image and OTHER_IMAGE; returns the first image's result and
    checks the second's semantic map."""
    batch = tiny_batch(NUM_CLASSES, sizes=[size, OTHER_IMAGE])
    batch[0]["height"], batch[0]["width"] = output_size
    net.eval()
    with torch.no_grad():
        results = net(batch)
    assert tuple(results[1]["sem_seg"].shape) == (NUM_CLASSES, *OTHER_IMAGE)
    return results[0]


combinations = pytest.mark.parametrize(
    "backbone, pixel_decoder",
    [(backbone, decoder) for backbone in BACKBONES for decoder in PIXEL_DECODERS])


@pytest.mark.parametrize("name", BACKBONES)
@settings(derandomize=True, database=None, deadline=None, max_examples=10)
@given(size=image_sizes())
@example(size=(224, 448))  # one window high at stride 32 (window 7): crashed in Swin
@example(size=(1, 1))
@example(size=(1, 1100))
@example(size=(1100, 137))
def test_backbone_features_have_stride_rounded_sizes(name, size):
    net = backbone_alone(name)
    height, width = size
    with torch.no_grad():
        features = net(torch.randn(1, 3, height, width))
    assert set(features) == {"res2", "res3", "res4", "res5"}
    for feature_name, shape in net.output_shape().items():
        expected = (1, shape.channels, math.ceil(height / shape.stride),
                    math.ceil(width / shape.stride))
        assert tuple(features[feature_name].shape) == expected, feature_name
        assert torch.isfinite(features[feature_name]).all(), feature_name


@combinations
@quick
@given(sizes=image_and_output_sizes())
@example(sizes=((224, 448), (224, 448)))
@example(sizes=((224, 448), (448, 896)))  # twice the image size
@example(sizes=((1, 1), (2, 2)))
@example(sizes=((1, 1100), (1, 1100)))
@example(sizes=((1100, 137), (550, 69)))
def test_inference_returns_the_requested_size(backbone, pixel_decoder, sizes):
    size, output_size = sizes
    semantic = infer(model(backbone, pixel_decoder), size, output_size)
    assert set(semantic) == {"sem_seg"}
    sem_seg = semantic["sem_seg"]
    assert tuple(sem_seg.shape) == (NUM_CLASSES, *output_size)
    assert torch.isfinite(sem_seg).all() and (sem_seg >= 0).all()

    panoptic = infer(model(backbone, pixel_decoder, panoptic=True), size, output_size)
    assert tuple(panoptic["sem_seg"].shape) == (NUM_CLASSES, *output_size)
    id_map, segments_info = panoptic["panoptic_seg"]
    assert id_map.dtype == torch.int32
    assert tuple(id_map.shape) == output_size
    segment_ids = {segment["id"] for segment in segments_info}
    assert set(id_map.unique().tolist()) <= segment_ids | {0}
    for segment in segments_info:
        assert segment["isthing"] == (segment["category_id"] in THING_IDS.values())


@combinations
@quick
@given(size=image_sizes())
@example(size=(224, 448))
@example(size=(1, 1))
@example(size=(1, 1100))
@example(size=(1100, 137))
def test_training_losses_are_finite_and_reach_every_parameter(backbone, pixel_decoder, size):
    net = model(backbone, pixel_decoder).train()
    net.zero_grad(set_to_none=True)
    losses = net(tiny_batch(NUM_CLASSES, sizes=[size]))
    assert set(losses) == set(net.criterion.weight_dict)
    for name, loss in losses.items():
        assert loss.dim() == 0 and torch.isfinite(loss), name
    sum(losses.values()).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@combinations
@pytest.mark.parametrize("size", [(224, 448), (1, 1100), (1100, 137), (1, 1)])
def test_cuda_graph_inference_sizes_match_eager(backbone, pixel_decoder, size):
    # Inference on a GPU replays a recorded CUDA graph; at these sizes too it must give eager's
    # results, of the requested size.
    nets = {}
    for graphed in (False, True):
        cfg = model_config(backbone, pixel_decoder, panoptic=True)
        cfg.MODEL.DEVICE = "cuda"
        cfg.MODEL.MASK_FORMER.TEST.CUDA_GRAPH = graphed
        torch.manual_seed(0)
        nets[graphed] = build_model(cfg)
    output_size = (2 * size[0], 2 * size[1])
    expected = infer(nets[False], size, output_size)
    assert tuple(expected["panoptic_seg"][0].shape) == output_size
    for _ in range(2):  # records the graph, then replays it
        result = infer(nets[True], size, output_size)
        assert tuple(result["sem_seg"].shape) == (NUM_CLASSES, *output_size)
        torch.testing.assert_close(result["sem_seg"], expected["sem_seg"], rtol=1e-5, atol=1e-6)
