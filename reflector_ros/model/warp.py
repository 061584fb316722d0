"""Inverse warping of a source image into a target view through depth and relative pose.

Conventions (all pure torch, differentiable in depth and pose):

- Camera frames are *optical* frames (REP 103 ``*_optical_frame``, OpenCV): x right,
  y down, z forward. Pixel (u, v) = (column, row) has its centre at integer coordinates,
  as in a calibration's K: u = fx X / Z + cx.
- Depth is metric Z along the optical axis (not the ray length), metres.
- ``T_source_target`` [B, 4, 4] maps a point's coordinates in the target camera frame to
  its coordinates in the source camera frame: X_s = R X_t + t (t in metres). With
  camera-to-world poses P_t, P_s (poses.txt) it is inverse(P_s) @ P_t
  (reflector_ros.data.poses.relative_pose).

Source: the view-synthesis warp of SfMLearner (Zhou et al. 2017) and Monodepth2
(Godard et al. 2019): back-project target pixels with depth, move them into the source
camera, project, sample the source bilinearly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_Z = 1e-3      # metres: points closer to (or behind) the source camera are invalid


def pixel_grid(h: int, w: int, like: Tensor) -> Tensor:
    """[3, h*w] homogeneous pixel centres (u, v, 1), row-major, dtype/device of ``like``."""
    v, u = torch.meshgrid(torch.arange(h, device=like.device, dtype=like.dtype),
                          torch.arange(w, device=like.device, dtype=like.dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)])


def backproject(depth: Tensor, K: Tensor) -> Tensor:
    """Target pixels to 3-D points in the target camera frame.

    depth [B, 1, H, W] metres (Z), K [B, 3, 3] -> points [B, 3, H*W] metres.
    """
    b, _, h, w = depth.shape
    rays = torch.linalg.inv(K) @ pixel_grid(h, w, depth)         # [B, 3, HW], Z = 1
    return rays * depth.reshape(b, 1, h * w)


def transform(T: Tensor, points: Tensor) -> Tensor:
    """T [B, 4, 4] applied to points [B, 3, N]: R p + t."""
    return T[:, :3, :3] @ points + T[:, :3, 3:]


def project(points: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Points [B, 3, N] in a camera frame -> (pixels [B, 2, N] as (u, v), Z [B, 1, N]).

    Z is clamped to MIN_Z before the division, so points behind the camera give finite
    (meaningless) pixels; callers mask them with Z > MIN_Z.
    """
    z = points[:, 2:3]
    uvw = K @ (points / z.clamp_min(MIN_Z))
    return uvw[:, :2], z


def warp(source: Tensor, depth: Tensor, K_target: Tensor, K_source: Tensor, T_source_target: Tensor,
         source_valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The source image seen from the target camera: sample source at the projection of
    every target pixel's 3-D point.

    source [B, C, Hs, Ws]; depth [B, 1, H, W] metres in the target frame; K_target [B, 3, 3]
    (target pixels), K_source [B, 3, 3] (source pixels; the two images may differ in size
    and offset); T_source_target [B, 4, 4]; source_valid [B, 1, Hs, Ws] (1 = real pixel) or
    None. Returns (warped [B, C, H, W], valid [B, 1, H, W] bool): valid where the point is
    in front of the source camera, lands inside the source image and (if given) on
    source_valid pixels only (all four bilinear neighbours).
    """
    b, _, h, w = depth.shape
    hs, ws = source.shape[-2:]
    pts = transform(T_source_target, backproject(depth, K_target))
    uv, z = project(pts, K_source)
    u, v = uv[:, 0], uv[:, 1]
    valid = (z[:, 0] > MIN_Z) & (u >= 0) & (u <= ws - 1) & (v >= 0) & (v <= hs - 1)
    # grid_sample with align_corners=False: pixel centre u sits at (2u + 1) / Ws - 1
    grid = torch.stack([(2 * u + 1) / ws - 1, (2 * v + 1) / hs - 1], dim=-1).reshape(b, h, w, 2)
    warped = F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode="border",
                           align_corners=False)
    if source_valid is not None:
        seen = F.grid_sample(source_valid.to(source.dtype), grid.to(source.dtype), mode="bilinear",
                             padding_mode="zeros", align_corners=False)
        valid = valid & (seen[:, 0].reshape(b, -1) > 0.999)
    return warped, valid.reshape(b, 1, h, w)


def so3_exp(omega: Tensor) -> Tensor:
    """Rotation vectors [N, 3] (axis * angle, radians) -> rotation matrices [N, 3, 3] (Rodrigues)."""
    theta = omega.norm(dim=1, keepdim=True)                               # [N, 1]
    small = theta < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    # sin(t)/t and (1 - cos t)/t^2 with their Taylor series near 0
    a = torch.where(small, 1 - theta ** 2 / 6, torch.sin(safe) / safe)
    c = torch.where(small, 0.5 - theta ** 2 / 24, (1 - torch.cos(safe)) / safe ** 2)
    x, y, z = omega.unbind(1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + a[..., None] * k + c[..., None] * (k @ k)


def refine_pose(T: Tensor, delta: Tensor) -> Tensor:
    """A relative pose corrected by ``delta`` [N, 6] = (rotation vector, direction nudge),
    keeping the translation's length, so the metric scale stays that of the input pose.

    T [N, 4, 4] (target -> source, metres) -> T' with R' = exp(delta[:, :3]) R and
    t' = |t| * normalise(t + |t| * delta[:, 3:]). delta = 0 returns T (to rounding).
    """
    R, t = T[:, :3, :3], T[:, :3, 3]
    length = t.norm(dim=1, keepdim=True)
    moved = t + length * delta[:, 3:]
    t2 = length * moved / moved.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = T.clone()
    out[:, :3, :3] = so3_exp(delta[:, :3]) @ R
    out[:, :3, 3] = t2
    return out
