"""The "reflect" step: attractor points move bin centres left or right instead of splitting bins.

ZoeDepth's inverse kernel f(dx) = dx / (1 + alpha dx^2), averaged over the attractors,
has derivative 1 - mean_k f'(a_k - c) >= 0 (f' <= 1), so the update c -> c + mean f(a - c)
is non-decreasing in c: sorted centres stay sorted without a sort op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attract(centres: Tensor, attractors: Tensor, alpha: float = 1000.0) -> Tensor:
    """centres [B,K,h,w], attractors [B,n,h,w] in unit space -> shifted centres, clipped to [0, 1]."""
    dx = attractors.unsqueeze(2) - centres.unsqueeze(1)          # [B,n,K,h,w]
    f = dx / (1.0 + alpha * dx * dx)
    shift = f[:, 0] if f.shape[1] == 1 else f.mean(dim=1)
    return torch.clamp(centres + shift, 0.0, 1.0)


class AttractorLayer(nn.Module):
    """One decoder scale: embed its features, look at a dilated neighbourhood, place attractors.

    The embedding of the previous (coarser) level is carried up and added, and the
    dilation grows level by level, so each step sees a wider context than the last.
    """

    def __init__(self, in_ch: int, emb: int, n_attractors: int, dilation: int,
                 alpha: float = 1000.0, dense: bool = True) -> None:
        """dense=False makes the context conv depthwise: for the 1/4 level, where a dense
        3x3 would dominate the CPU latency."""
        super().__init__()
        self.alpha = alpha
        self.embed = nn.Conv2d(in_ch + 1, emb, 1)
        self.context = nn.Conv2d(emb, emb, 3, 1, dilation, dilation=dilation, groups=1 if dense else emb)
        self.mix = nn.Conv2d(emb, emb, 1)
        self.to_attr = nn.Conv2d(emb, n_attractors, 1)

    def forward(self, feat: Tensor, rel: Tensor, centres: Tensor,
                prev_emb: Tensor | None) -> tuple[Tensor, Tensor]:
        """Returns (centres at this level's resolution, embedding for the next level)."""
        size = feat.shape[-2:]  # read from the graph: follows a dynamic input size, folded when static
        e = self.embed(torch.cat([feat, rel], dim=1))
        if prev_emb is not None:
            e = e + F.interpolate(prev_emb, size=size, mode="bilinear", align_corners=False)
        e = F.relu(self.mix(F.relu(self.context(F.relu(e))))) + e
        attractors = torch.sigmoid(self.to_attr(e))
        # Bilinear upsampling is a convex combination per pixel: order is preserved.
        c = F.interpolate(centres, size=size, mode="bilinear", align_corners=False)
        return attract(c, attractors, self.alpha), e
