"""Per-pixel probability over the K bins, expected depth and a confidence from its spread."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BinProbabilityHead(nn.Module):
    """Logits at 1/4 from the last embedding, the centres and rel depth; refined at full resolution.

    At full resolution each bin gets a learned slope times the normalised rel depth,
    so fine edges of the relative map reach the metric output without a full-res conv.
    """

    def __init__(self, emb: int, n_bins: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(emb + n_bins + 1, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, n_bins, 1))
        # Prior: larger inverse depth (nearer) favours the lower bins.
        self.rel_slope = nn.Parameter(-torch.linspace(-1.0, 1.0, n_bins).view(1, n_bins, 1, 1))

    def forward(self, emb: Tensor, centres_u: Tensor, rel_q: Tensor, rel_full: Tensor) -> Tensor:
        """Returns logits [B,K,H,W] at rel_full's resolution."""
        logits = self.net(torch.cat([emb, centres_u, rel_q], dim=1))
        logits = F.interpolate(logits, size=rel_full.shape[-2:], mode="bilinear", align_corners=False)
        return logits + self.rel_slope * rel_full


def expectation_and_confidence(probs: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Depth d = sum p_k c_k; confidence = exp(-sigma / d), sigma the std of the bin distribution.

    sigma / d is a relative spread, so the confidence does not depend on the metric scale
    (focal_scale) and lies in (0, 1]: 1 for a one-bin distribution, about 0.37 when the
    spread equals the depth itself.
    """
    d = (probs * centres).sum(dim=1, keepdim=True)
    diff = centres - d
    var = (probs * diff * diff).sum(dim=1, keepdim=True)
    sigma = torch.sqrt(var + 1e-12)
    return d, torch.exp(-sigma / d)
