"""Training losses. All compute in fp32, even under autocast (ZoeDepth saw NaNs in AMP SILog).

Shapes: pred, target [B,1,H,W] or [B,H,W]; mask the same shape, bool (True = valid).
Relative losses (ssi, gradient matching, rpnl) take inverse depth or depth alike: they
are invariant to a positive scale and a shift of the prediction.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6


def _fp32(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Disable autocast and upcast tensor arguments."""
    @wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Tensor:
        dev = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device_type=dev, enabled=False):
            args = tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)
            return fn(*args, **kwargs)
    return inner


def _flat(x: Tensor) -> Tensor:
    """[B,1,H,W] or [B,H,W] -> [B,H,W]."""
    return x[:, 0] if x.dim() == 4 else x


def _median_mad(x: Tensor) -> tuple[Tensor, Tensor]:
    med = x.median()
    return med, (x - med).abs().mean().clamp_min(EPS)


def normalise_median_mad(x: Tensor, mask: Tensor) -> Tensor:
    """Per-image (x - median) / mean|x - median| over valid pixels; invalid pixels -> 0."""
    x, mask = _flat(x), _flat(mask)
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        v = x[i][mask[i]]
        if v.numel() < 2:
            continue
        med, mad = _median_mad(v)
        out[i] = torch.where(mask[i], (x[i] - med) / mad, torch.zeros_like(x[i]))
    return out


def _zero(like: Tensor) -> Tensor:
    """A differentiable zero so an empty batch never breaks backward."""
    return like.sum() * 0.0


@_fp32
def ssi_loss(pred: Tensor, target: Tensor, mask: Tensor, trim: float = 0.2) -> Tensor:
    """MiDaS scale-and-shift-invariant MAE after median/MAD alignment, largest `trim` residuals dropped."""
    p, t, m = _flat(pred), _flat(target), _flat(mask).bool()
    losses = []
    for i in range(p.shape[0]):
        pv, tv = p[i][m[i]], t[i][m[i]]
        if pv.numel() < 2:
            continue
        (pm, ps), (tm, ts) = _median_mad(pv), _median_mad(tv)
        res = ((pv - pm) / ps - (tv - tm) / ts).abs()
        keep = max(1, int(math.ceil(res.numel() * (1.0 - trim))))
        res = torch.sort(res).values[:keep]
        losses.append(res.mean())
    return torch.stack(losses).mean() if losses else _zero(pred)


@_fp32
def gradient_matching_loss(pred: Tensor, target: Tensor, mask: Tensor, scales: int = 4) -> Tensor:
    """MiDaS multi-scale gradient matching on the median/MAD-normalised maps: sharp, aligned edges."""
    m = _flat(mask).bool()
    diff = normalise_median_mad(pred, m) - normalise_median_mad(target, m)
    total = _zero(pred)
    for s in range(scales):
        step = 2 ** s
        d, mk = diff[:, ::step, ::step], m[:, ::step, ::step].float()
        gx = (d[:, :, 1:] - d[:, :, :-1]).abs() * mk[:, :, 1:] * mk[:, :, :-1]
        gy = (d[:, 1:, :] - d[:, :-1, :]).abs() * mk[:, 1:, :] * mk[:, :-1, :]
        n = mk.sum()
        if n > 0:
            total = total + (gx.sum() + gy.sum()) / n
    return total


@_fp32
def silog_loss(pred: Tensor, target: Tensor, mask: Tensor, lam: float = 0.85) -> Tensor:
    """10 * sqrt(Var(g) + (1 - lam) mean(g)^2), g = log pred - log target over valid pixels."""
    m = _flat(mask).bool() & (_flat(target) > 0)
    if not m.any():
        return _zero(pred)
    g = torch.log(_flat(pred)[m].clamp_min(EPS)) - torch.log(_flat(target)[m])
    mean = g.mean()
    var = ((g - mean) ** 2).mean()
    return 10.0 * torch.sqrt(var + (1.0 - lam) * mean * mean + 1e-10)


@_fp32
def feature_match_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """mean((student - teacher)^2) / Var(teacher): a feature map held to a teacher's, in units
    of the teacher's own spread, so maps of any scale weigh alike (FitNets-style hint loss).

    student, teacher: the same shape, [B,C,h,w]; the teacher carries no gradient.
    """
    return ((student - teacher) ** 2).mean() / (teacher.var() + 1e-6)


@_fp32
def rpnl_loss(pred: Tensor, target: Tensor, mask: Tensor, n_patches: int = 8,
              generator: torch.Generator | None = None) -> Tensor:
    """Metric3D random-proposal normalisation: median/MAD-normalised L1 inside random patches
    whose sides are 12.5-50 % of the image side, so local structure counts, not just global."""
    p, t, m = _flat(pred), _flat(target), _flat(mask).bool()
    b, h, w = p.shape
    losses = []
    for i in range(b):
        for _ in range(n_patches):
            r = torch.rand(4, generator=generator).tolist()
            ph, pw = max(2, int(h * (0.125 + 0.375 * r[0]))), max(2, int(w * (0.125 + 0.375 * r[1])))
            y0, x0 = int((h - ph) * r[2]), int((w - pw) * r[3])
            mk = m[i, y0:y0 + ph, x0:x0 + pw]
            if mk.sum() < 4:
                continue
            pv, tv = p[i, y0:y0 + ph, x0:x0 + pw][mk], t[i, y0:y0 + ph, x0:x0 + pw][mk]
            (pm, ps), (tm, ts) = _median_mad(pv), _median_mad(tv)
            losses.append(((pv - pm) / ps - (tv - tm) / ts).abs().mean())
    return torch.stack(losses).mean() if losses else _zero(pred)


@_fp32
def chamfer_bins_loss(centers: Tensor, target: Tensor, mask: Tensor, n_samples: int = 1024,
                      generator: torch.Generator | None = None) -> Tensor:
    """Bidirectional chamfer (in log depth) between each image's bin centres and its valid depths.

    centers: [B,K] (global bins) or [B,K,H,W] (per-pixel; a random subset of pixels' centres
    stands for the image). Pulls the bins towards depths that occur and vice versa (AdaBins).
    """
    t, m = _flat(target), _flat(mask).bool() & (_flat(target) > 0)
    losses = []
    for i in range(t.shape[0]):
        tv = t[i][m[i]]
        if tv.numel() == 0:
            continue
        if tv.numel() > n_samples:
            tv = tv[torch.randint(tv.numel(), (n_samples,), generator=generator).to(tv.device)]
        c = centers[i].reshape(centers.shape[1], -1).t().reshape(-1)  # all centres of the image
        if c.numel() > n_samples:
            c = c[torch.randint(c.numel(), (n_samples,), generator=generator).to(c.device)]
        d = (torch.log(c.clamp_min(EPS))[:, None] - torch.log(tv)[None, :]).abs()
        losses.append(d.min(dim=1).values.mean() + d.min(dim=0).values.mean())
    return torch.stack(losses).mean() if losses else _zero(centers)


@_fp32
def bin_nll_loss(centers: Tensor, probs: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of the per-pixel bin distribution against the target depth.

    The target is split between the two bins that bracket it (linearly in log depth), so
    the loss is a proper score: it rewards a sharp distribution only where the network can
    place the depth, and a spread one where it cannot. SILog on the expectation alone lets
    the distribution collapse onto one bin, which makes the confidence output meaningless.

    centers, probs: [B,K,h,w] (the head's resolution); target, mask: [B,1,H,W] canonical depth.
    """
    h, w = probs.shape[-2:]
    t = F.interpolate(target.float(), size=(h, w), mode="nearest")
    m = F.interpolate(mask.float(), size=(h, w), mode="nearest") > 0.5
    m = m & (t > 0)
    if not bool(m.any()):
        return _zero(probs)
    k = centers.shape[1]
    lc = torch.log(centers.float().clamp_min(EPS))
    lt = torch.log(t.clamp_min(EPS))
    j = ((lc <= lt).sum(dim=1, keepdim=True) - 1).clamp(0, k - 2)
    lo, hi = lc.gather(1, j), lc.gather(1, j + 1)
    w_hi = ((lt - lo) / (hi - lo).clamp_min(EPS)).clamp(0.0, 1.0)
    logp = torch.log(probs.float().clamp_min(1e-8))
    ce = -((1.0 - w_hi) * logp.gather(1, j) + w_hi * logp.gather(1, j + 1))
    return ce[m].mean()
