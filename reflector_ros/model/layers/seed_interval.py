"""Per-pixel seed depth interval and K bin centres, predicted from the bottleneck and rel depth.

Centres live in a normalised unit u in [0, 1] that maps to log depth over
[min_depth, max_depth]; log spacing gives equal relative resolution near and far.
They are placed by cumulative softplus widths, so they are strictly increasing by
construction (no sort, which would export as TopK).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def unit_to_depth(u: Tensor, min_depth: float, max_depth: float) -> Tensor:
    """u in [0, 1] -> canonical metres, log-uniform; monotonic so bin order is kept."""
    lo, hi = math.log(min_depth), math.log(max_depth)
    return torch.exp(lo + u * (hi - lo))


class SeedInterval(nn.Module):
    """1x1-conv MLP: features + rel depth -> interval [low, high] and K sorted centres in it."""

    def __init__(self, in_ch: int, n_bins: int, hidden: int = 64) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.mlp = nn.Sequential(nn.Conv2d(in_ch + 1, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 2 + n_bins, 1))

    def forward(self, feat: Tensor, rel: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (centres_u [B,K,h,w], low_u [B,1,h,w], high_u [B,1,h,w])."""
        out = self.mlp(torch.cat([feat, rel], dim=1))
        low = torch.sigmoid(out[:, 0:1])
        high = low + (1.0 - low) * torch.sigmoid(out[:, 1:2])
        widths = nn.functional.softplus(out[:, 2:]) + 1e-3
        total = widths.sum(dim=1, keepdim=True)
        mids = (torch.cumsum(widths, dim=1) - 0.5 * widths) / total
        return low + (high - low) * mids, low, high
