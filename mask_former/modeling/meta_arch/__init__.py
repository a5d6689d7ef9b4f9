"""Segmentation heads: MaskFormer's (pixel decoder + transformer decoder) and the per-pixel
classification baselines of the MaskFormer paper."""
from .mask_former_head import MaskFormerHead
from .per_pixel_baseline import PerPixelBaselineHead, PerPixelBaselinePlusHead

__all__ = ["MaskFormerHead", "PerPixelBaselineHead", "PerPixelBaselinePlusHead"]
