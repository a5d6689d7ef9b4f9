from .backbone.swin import D2SwinTransformer, SwinTransformer
from .criterion import SetCriterion
from .heads import (
    PIXEL_DECODER_REGISTRY,
    BasePixelDecoder,
    MaskFormerHead,
    PerPixelBaselineHead,
    PerPixelBaselinePlusHead,
    TransformerEncoderPixelDecoder,
    build_pixel_decoder,
)
from .matcher import HungarianMatcher
from .transformer import TransformerPredictor
