"""Per-pixel probability over the K bins, expected depth and a confidence from its spread.

The distribution lives at 1/4 resolution: a softmax over 64 channels at full resolution
cost ~300 ms in ONNX Runtime on a 2-core CPU (non-last-axis softmax transposes), versus
a few ms here. Full-resolution detail comes back through the rel-depth guided upsampling
in the Reflector head.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class BinProbabilityHead(nn.Module):
    """Bin logits from the last attractor embedding, the current centres, rel depth and the
    image at the same resolution (colour cues for where the distribution should be sharp)."""

    def __init__(self, emb: int, n_bins: int, hidden: int = 96) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(emb + n_bins + 1 + 3, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, n_bins, 1))
        # Prior: larger inverse depth (nearer) favours the lower bins.
        self.rel_slope = nn.Parameter(-torch.linspace(-1.0, 1.0, n_bins).view(1, n_bins, 1, 1))

    def forward(self, emb: Tensor, centres_u: Tensor, rel: Tensor, image: Tensor) -> Tensor:
        """Returns logits [B,K,h,w] at emb's resolution; rel and image already resized to it."""
        return self.net(torch.cat([emb, centres_u, rel, image], dim=1)) + self.rel_slope * rel


def softmax_channels(logits: Tensor) -> Tensor:
    """Softmax over dim 1 spelled as ReduceMax/Exp/ReduceSum: ONNX Runtime's Softmax on a
    non-last axis is an order of magnitude slower on CPU."""
    e = torch.exp(logits - logits.amax(dim=1, keepdim=True))
    return e / e.sum(dim=1, keepdim=True)


def expectation_and_spread(probs: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Depth d = sum p_k c_k and the relative spread sigma / d, sigma the std of the bin
    distribution; probs and centres [B,K,h,w], both results [B,1,h,w].

    sigma / d does not depend on the metric scale (focal_scale). The "spread" confidence is
    exp(-sigma / d), in (0, 1]: 1 for a one-bin distribution, about 0.37 when the spread
    equals the depth itself.
    """
    d = (probs * centres).sum(dim=1, keepdim=True)
    diff = centres - d
    var = (probs * diff * diff).sum(dim=1, keepdim=True)
    return d, torch.sqrt(var + 1e-12) / d
