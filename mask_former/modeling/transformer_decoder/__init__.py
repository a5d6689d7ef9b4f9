"""Transformer decoders: N learned queries -> N (class, mask embedding) predictions."""
from .build import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder
from .mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder
from .maskformer_transformer_decoder import MLP, StandardTransformerDecoder, TransformerPredictor
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer, TransformerEncoderOnly

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder", "MLP",
           "MultiScaleMaskedTransformerDecoder", "StandardTransformerDecoder",
           "TransformerPredictor", "PositionEmbeddingSine", "Transformer", "TransformerEncoderOnly"]
