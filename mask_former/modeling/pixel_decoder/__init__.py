"""Pixel decoders: backbone features -> per-pixel embeddings (and the features the transformer
decoder reads)."""
from .build import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .fpn import BasePixelDecoder, TransformerEncoderPixelDecoder
from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder", "BasePixelDecoder",
           "TransformerEncoderPixelDecoder", "MSDeformAttnPixelDecoder"]
