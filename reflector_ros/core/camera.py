"""Pinhole intrinsics: validation of K, rescaling to another resolution, K/P matrices.

The metric scale of the network depends on the focal length, so a bad K must be refused
loudly rather than turned into silently wrong depth.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from reflector_ros.core.decode import MAX_DIM
from reflector_ros.core.errors import InputError


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


def check_size(width: int, height: int) -> None:
    for name, val in (("width", width), ("height", height)):
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0 or val >= MAX_DIM:
            raise InputError(f"camera {name} {val!r} is not a usable image size (1..{MAX_DIM - 1})")


def intrinsics_from_k(k: Sequence[float], width: int, height: int) -> Intrinsics:
    """Row-major 3x3 K (as in CameraInfo.k) -> Intrinsics, refusing unusable values."""
    vals = [float(v) for v in k]
    if len(vals) != 9:
        raise InputError(f"K must have 9 values (row-major 3x3), got {len(vals)}")
    check_size(int(width), int(height))
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"K contains NaN or inf: {vals}")
    if all(v == 0.0 for v in vals):
        raise InputError("K is all zeros: the camera is uncalibrated (camera_info not filled in); "
                         "metric depth needs the focal length")
    fx, fy, cx, cy = vals[0], vals[4], vals[2], vals[5]
    if fx <= 0 or fy <= 0:
        raise InputError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
    return Intrinsics(fx, fy, cx, cy, int(width), int(height))


def scale_intrinsics(intr: Intrinsics, width: int, height: int) -> Intrinsics:
    """The same camera after a plain resize to (width, height).

    Uses the pixel-centre convention of cv2.resize: pixel u' samples source
    (u' + 0.5)/s - 0.5, so cx' = (cx + 0.5)*s - 0.5.
    """
    check_size(int(width), int(height))
    if (width, height) == (intr.width, intr.height):
        return intr
    sx, sy = width / intr.width, height / intr.height
    return Intrinsics(intr.fx * sx, intr.fy * sy, (intr.cx + 0.5) * sx - 0.5, (intr.cy + 0.5) * sy - 0.5,
                      int(width), int(height))


def k_matrix(intr: Intrinsics) -> list[float]:
    return [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]


def p_matrix(intr: Intrinsics) -> list[float]:
    """P = [K | 0]: the depth is in the camera's own (rectified) frame, no baseline."""
    return [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
