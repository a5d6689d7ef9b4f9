"""Sine position encoding of DETR, normalised to [0, 2*pi] over the feature map."""
import math
from typing import Optional

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sine/cosine encoding ("Attention is all you need", extended to images).

    Returns (B, 2 * num_pos_feats, H, W): the first half encodes y, the second half x.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: int = 10000, normalize: bool = False,
                 scale: Optional[float] = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: `scale` is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, C, H, W), only its shape and device are used; mask: (B, H, W), True on padding."""
        if mask is None:
            mask = torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            # The last row (column) as select + unsqueeze rather than the slice [-1:]: an export
            # with symbolic sizes then knows that its size is 1 and broadcasts it.
            y_embed = y_embed / (y_embed.select(1, -1).unsqueeze(1) + eps) * self.scale
            x_embed = x_embed / (x_embed.select(2, -1).unsqueeze(2) + eps) * self.scale

        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)

        pos_x = self._interleave_sin_cos(x_embed[:, :, :, None] / dim_t)
        pos_y = self._interleave_sin_cos(y_embed[:, :, :, None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave_sin_cos(t: torch.Tensor) -> torch.Tensor:
        """(B, H, W, F) -> (B, H, W, F): sin of even channels, cos of odd channels, interleaved."""
        return torch.stack((t[..., 0::2].sin(), t[..., 1::2].cos()), dim=4).flatten(3)
