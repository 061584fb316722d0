"""Self-supervised losses: photometric reconstruction and edge-aware smoothness.

Images here are RGB in [0, 1], [B, 3, H, W]; depth is metric [B, 1, h, w]. Everything
runs in fp32 even under autocast. Sources: the photometric error and SSIM of
Monodepth (Godard et al. 2017), the per-pixel minimum over sources, auto-masking and the
full-resolution multi-scale loss of Monodepth2 (Godard et al. 2019, "Digging Into
Self-Supervised Monocular Depth Estimation"), view synthesis of SfMLearner (Zhou et
al. 2017). Pose conventions: reflector_ros/model/warp.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from reflector_ros.model.warp import warp

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-pixel SSIM index [B, C, H, W] of two images [B, C, H, W] in [0, 1], on 3x3
    windows (mean filter, reflection padding), C1 = 0.01^2, C2 = 0.03^2 (Monodepth)."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sxx = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    syy = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    sxy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (sxx + syy + SSIM_C2)
    return num / den


def photometric_error(pred: Tensor, target: Tensor, alpha: float = 0.85) -> Tensor:
    """alpha * (1 - SSIM) / 2 + (1 - alpha) * |pred - target|, averaged over channels.

    pred, target [B, 3, H, W] in [0, 1] -> [B, 1, H, W], 0 for identical images, at most 1.
    """
    dssim = ((1 - ssim(pred, target)) / 2).clamp(0, 1).mean(1, keepdim=True)
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return alpha * dssim + (1 - alpha) * l1


@dataclass
class Reprojection:
    """Per-pixel result of min_reprojection, all [B, 1, H, W].

    ``loss``: what the pixel contributes (the minimum reprojection error where kept,
    else the identity error, which carries no gradient); ``error``: minimum reprojection
    error over sources (inf where no source sees the pixel); ``kept``: bool, the pixels the
    loss learns from (valid, and not explained better by an unwarped source).
    """

    loss: Tensor
    error: Tensor
    kept: Tensor


def min_reprojection(target: Tensor, warped: Tensor, valid: Tensor, identity: Tensor | None = None,
                     identity_valid: Tensor | None = None, alpha: float = 0.85) -> Reprojection:
    """Monodepth2's per-pixel minimum over sources, with auto-masking.

    target [B, 3, H, W]; warped [B, S, 3, H, W] (sources warped into the target); valid
    [B, S, 1, H, W] bool; identity [B, S, 3, H, W] the *unwarped* sources at the target's
    pixels (None: no auto-masking) and identity_valid [B, S, 1, H, W]. A pixel is kept
    where the best warped source beats the best unwarped one (strictly: a tie, as in a
    static pair with no motion, is masked). Occlusions and out-of-view pixels pick the
    other source through the minimum.
    """
    b, s = warped.shape[:2]
    tgt = target.unsqueeze(1).expand_as(warped).reshape(b * s, *target.shape[1:])
    err = photometric_error(warped.reshape(b * s, *warped.shape[2:]), tgt, alpha).reshape(b, s, 1, *target.shape[2:])
    err = torch.where(valid, err, torch.full_like(err, math.inf))
    best = err.min(dim=1).values                                            # [B, 1, H, W]
    seen = torch.isfinite(best)
    if identity is None:
        return Reprojection(torch.where(seen, best, torch.zeros_like(best)), best, seen)
    with torch.no_grad():
        ident = photometric_error(identity.reshape(b * s, *identity.shape[2:]), tgt, alpha).reshape(err.shape)
        if identity_valid is not None:
            ident = torch.where(identity_valid, ident, torch.full_like(ident, math.inf))
        ident_best = ident.min(dim=1).values
    kept = seen & (best < ident_best)
    fallback = torch.where(torch.isfinite(ident_best), ident_best, torch.zeros_like(ident_best))
    return Reprojection(torch.where(kept, best, fallback), best, kept)


def smoothness_loss(depth: Tensor, image: Tensor) -> Tensor:
    """Edge-aware smoothness of mean-normalised inverse depth (Monodepth2):
    mean |d_x d*| exp(-|d_x I|) + mean |d_y d*| exp(-|d_y I|), d* = (1/depth) / mean(1/depth)
    per image, image gradients averaged over channels.

    depth [B, 1, h, w] metres (> 0); image [B, 3, h, w] in [0, 1] at the same size -> scalar.
    """
    disp = 1.0 / depth.clamp_min(1e-6)
    disp = disp / disp.mean(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


@dataclass
class SelfsupBatch:
    """What the photometric loss needs for B targets with S sources each.

    target [B, 3, H, W] in [0, 1] (no colour jitter); target_valid [B, 1, H, W] bool
    (False on padding); sources [B, S, 3, Hs, Ws] in [0, 1], windows of Hs = H + 2m,
    Ws = W + 2m around the target crop; source_valid [B, S, 1, Hs, Ws] bool; K [B, 3, 3]
    target intrinsics; K_sources [B, S, 3, 3]; T [B, S, 4, 4] target -> source (metres);
    margin m in pixels.
    """

    target: Tensor
    target_valid: Tensor
    sources: Tensor
    source_valid: Tensor
    K: Tensor
    K_sources: Tensor
    T: Tensor
    margin: int


def selfsup_losses(depths: list[Tensor], batch: SelfsupBatch, alpha: float = 0.85, smoothness: float = 1e-3,
                   automask: bool = True) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Photometric and smoothness terms over every decoder scale (Monodepth2).

    depths: metric depth maps [B, 1, h_i, w_i] of the target, one per decoder scale (full
    resolution first). Each is upsampled to the target's full resolution before warping
    (the full-resolution multi-scale loss); smoothness is taken at the scale's own
    resolution with weight ``smoothness / 2^i`` for a map 2^i smaller than the input.
    Returns ({"photo", "smooth"} scalars averaged over scales, {"kept": fraction of target
    pixels the loss learned from at full resolution}).
    """
    with torch.autocast(device_type=batch.target.device.type, enabled=False):
        b, s = batch.sources.shape[:2]
        h, w = batch.target.shape[-2:]
        m = batch.margin
        flat_src = batch.sources.reshape(b * s, *batch.sources.shape[2:]).float()
        flat_valid = batch.source_valid.reshape(b * s, *batch.source_valid.shape[2:])
        K = batch.K.float().unsqueeze(1).expand(b, s, 3, 3).reshape(b * s, 3, 3)
        Ks = batch.K_sources.float().reshape(b * s, 3, 3)
        T = batch.T.float().reshape(b * s, 4, 4)
        identity = batch.sources[..., m:m + h, m:m + w].float()
        identity_valid = batch.source_valid[..., m:m + h, m:m + w]
        tvalid = batch.target_valid
        photo, smooth = [], []
        kept_frac = 0.0
        for i, d in enumerate(depths):
            d = d.float()
            full = d if d.shape[-2:] == (h, w) else F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)
            depth_s = full.unsqueeze(1).expand(b, s, 1, h, w).reshape(b * s, 1, h, w)
            warped, valid = warp(flat_src, depth_s, K, Ks, T, flat_valid)
            rep = min_reprojection(batch.target.float(), warped.reshape(b, s, 3, h, w), valid.reshape(b, s, 1, h, w),
                                   identity if automask else None, identity_valid if automask else None, alpha)
            n = tvalid.sum().clamp_min(1)
            photo.append((rep.loss * tvalid).sum() / n)
            if i == 0:
                kept_frac = float((rep.kept & tvalid).sum() / n)
            level = math.log2(max(h / d.shape[-2], 1.0))
            img = batch.target.float()
            if d.shape[-2:] != (h, w):
                img = F.interpolate(img, size=d.shape[-2:], mode="area")
            smooth.append(smoothness / (2 ** level) * smoothness_loss(d, img))
        terms = {"photo": torch.stack(photo).mean(), "smooth": torch.stack(smooth).mean()}
    return terms, {"kept": kept_frac}
