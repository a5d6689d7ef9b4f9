from .swin import D2SwinTransformer, SwinTransformer
