from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer, TransformerEncoderOnly
from .transformer_predictor import MLP, TransformerPredictor
