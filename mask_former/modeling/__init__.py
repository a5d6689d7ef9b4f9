"""MaskFormer's parts, one concept per module, each in a registry:

- backbone/: D2SwinTransformer (detectron2's BACKBONE_REGISTRY; ResNets are detectron2's own)
- pixel_decoder/: PIXEL_DECODER_REGISTRY, MaskFormer's FPN decoders, Mask2Former's
  MSDeformAttnPixelDecoder (deformable attention in pure PyTorch: pixel_decoder/ops/)
- transformer_decoder/: TRANSFORMER_DECODER_REGISTRY, MaskFormer's TransformerPredictor,
  Mask2Former's MultiScaleMaskedTransformerDecoder
- meta_arch/: the segmentation heads (detectron2's SEM_SEG_HEADS_REGISTRY)
- matcher.py, criterion.py, losses.py: Hungarian matching and the set criterion
"""
from .backbone.swin import D2SwinTransformer, SwinTransformer
from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .meta_arch import MaskFormerHead, PerPixelBaselineHead, PerPixelBaselinePlusHead
from .pixel_decoder import (
    PIXEL_DECODER_REGISTRY,
    BasePixelDecoder,
    MSDeformAttnPixelDecoder,
    TransformerEncoderPixelDecoder,
    build_pixel_decoder,
)
from .transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    StandardTransformerDecoder,
    TransformerPredictor,
    build_transformer_decoder,
)
