"""Multi-scale deformable attention (Deformable DETR), in pure PyTorch."""
from .ms_deform_attn import (
    MSDeformAttn,
    ms_deform_attn,
    ms_deform_attn_pytorch,
    use_fast_ms_deform_attn,
    use_triton_ms_deform_attn,
)

__all__ = ["MSDeformAttn", "ms_deform_attn", "ms_deform_attn_pytorch", "use_fast_ms_deform_attn",
           "use_triton_ms_deform_attn"]
