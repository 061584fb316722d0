"""A learned confidence: where in a frame the depth is worse than elsewhere (aleatoric, Laplace).

The head predicts s = log b per pixel, where b is the scale of a Laplace distribution over
the *relative* log-depth residual r = |log d - log d*| / mean over the frame's valid pixels
of |log d - log d*|; trained by its negative log-likelihood r / b + log b (Kendall & Gal
2017, "What uncertainties do we need in Bayesian deep learning"; Poggi et al. 2020 use the
same loss for monocular depth). Under that model b = E[r], so ``confidence = exp(-b)``
reads against the frame's own average error: 0.37 (b = 1) is a pixel as good as the
frame's average, 0.61 one with half the average error, 0.14 one with twice it.

Why relative: how wrong a whole frame is (its metric scale) is not something the head can
see from a pixel's surroundings; dividing it out leaves what it can learn, which pixels of a
frame to trust more (with the absolute residual, on the frames tried, the head mostly
learned each frame's overall error and ranked pixels worse).

Its inputs are detached: the head learns where the network errs and never changes the
depth. It sees the last attractor embedding, the relative spread of the bin distribution,
the relative depth, the image and the pixel position (normalised to [-1, 1] over the
network input, so it must see whole frames in training: augment.whole_frames), all at
1/4 resolution, where the bins live.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def pixel_grid(like: Tensor) -> Tensor:
    """[B, 2, h, w]: x and y in [-1, 1] over ``like``'s height and width ([B, C, h, w], finite).

    Spelled with CumSum and ReduceMax on a map of ones, so that the ONNX graph computes it
    for any input size from ops the graph already uses (no Range/Expand for TensorRT).
    """
    ones = like[:, :1] * 0.0 + 1.0
    grid = []
    for dim in (3, 2):
        idx = torch.cumsum(ones, dim=dim)                              # 1 .. n along dim
        n1 = torch.clamp(idx.amax(dim=dim, keepdim=True) - 1.0, min=1.0)  # n - 1 (1 for n = 1)
        grid.append((idx - 1.0) * 2.0 / n1 - 1.0)
    return torch.cat(grid, dim=1)


class ErrorHead(nn.Module):
    """(emb [B,E,h,w], spread [B,1,h,w], rel [B,1,h,w], image [B,3,h,w]) -> log b [B,1,h,w].

    ``spread`` is sigma / d of the bin distribution (unitless); ``rel`` the normalised
    relative depth and ``image`` the network input, both resized to (h, w).
    """

    def __init__(self, emb: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(emb + 1 + 1 + 3 + 2, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 3, 1, 2, dilation=2), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, hidden, 3, 1, 4, dilation=4), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 1, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)  # b = 1 everywhere (the frame's average) until trained

    def forward(self, emb: Tensor, spread: Tensor, rel: Tensor, image: Tensor) -> Tensor:
        x = torch.cat([emb, spread * 10.0, rel, image], dim=1).detach()
        return self.net(torch.cat([x, pixel_grid(x)], dim=1))


def relative_residual(depth: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """|log d - log d*| over its mean on each image's ``mask`` pixels (1 = the image's average
    error); depth, target (same units, > 0 where masked) and mask [B,1,H,W]; 0 off the mask."""
    r = torch.abs(torch.log(depth.clamp_min(1e-6)) - torch.log(target.clamp_min(1e-6)))
    r = torch.where(mask, r, torch.zeros_like(r))
    mean = r.sum(dim=(1, 2, 3), keepdim=True) / mask.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)
    return r / mean.clamp_min(1e-4)


def laplace_nll(log_b: Tensor, residual: Tensor, mask: Tensor) -> Tensor:
    """Mean over ``mask`` of r / b + log b, with r = ``residual`` (detached here) and
    b = exp(log_b); all [B,1,H,W]. Minimal where b = r on average."""
    r = residual.detach()
    nll = r * torch.exp(-log_b) + log_b
    n = mask.sum()
    return torch.where(mask, nll, torch.zeros_like(nll)).sum() / n.clamp_min(1)
