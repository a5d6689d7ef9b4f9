"""MaskFormer as a detectron2 project. Importing it registers every component and dataset."""
from . import data, modeling
from .config import add_mask_former_config
from .mask_former_model import MaskFormer

__all__ = ["add_mask_former_config", "MaskFormer", "data", "modeling"]
