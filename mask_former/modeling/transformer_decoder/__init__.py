"""Transformer decoders: N learned queries -> N (class, mask embedding) predictions."""
from .build import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder
from .maskformer_transformer_decoder import MLP, TransformerPredictor
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer, TransformerEncoderOnly

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder", "MLP",
           "TransformerPredictor", "PositionEmbeddingSine", "Transformer", "TransformerEncoderOnly"]
