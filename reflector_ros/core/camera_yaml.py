"""Intrinsics from a ROS camera_calibration YAML (the file camera_info_manager reads).

Offline tools need the focal length to turn canonical depth into metres; users
already have this file from `ros2 run camera_calibration cameracalibrator`.
"""
from __future__ import annotations

from dataclasses import astuple
from pathlib import Path
from typing import NamedTuple

import yaml

from reflector_ros.core.camera import Intrinsics, scale_intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.core.rectify import Calibration, calibration

MAX_SIDE = 16384


class Pinhole(NamedTuple):
    """Pinhole intrinsics in pixels of an image of width x height."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def intrinsics(self) -> Intrinsics:
        return Intrinsics(self.fx, self.fy, self.cx, self.cy, self.width, self.height)

    def scaled_to(self, width: int, height: int) -> "Pinhole":
        """Same camera seen at another resolution (plain resize, no crop)."""
        return Pinhole(*astuple(scale_intrinsics(self.intrinsics(), width, height)))


def check_pinhole(p: Pinhole) -> Pinhole:
    """Refuse intrinsics no real camera has, so the metric scale is never silently wrong."""
    if not (0 < p.width <= MAX_SIDE and 0 < p.height <= MAX_SIDE):
        raise InputError(f"camera size {p.width}x{p.height} is not a usable image size")
    for name in ("fx", "fy"):
        v = getattr(p, name)
        if not (v == v and 1.0 <= v <= 100.0 * max(p.width, p.height)):
            raise InputError(f"camera {name}={v} is not a usable focal length in pixels")
    for name in ("cx", "cy"):
        v = getattr(p, name)
        if not (v == v and abs(v) < 10 * MAX_SIDE):
            raise InputError(f"camera {name}={v} is not a usable principal point")
    return p


def _matrix(doc: dict, key: str, rows: int, cols: int, path: Path) -> list[float] | None:
    m = doc.get(key)
    if m is None:
        return None
    data = m.get("data") if isinstance(m, dict) else None
    if not isinstance(data, list) or len(data) != rows * cols:
        raise InputError(f"{path}: {key}.data must be a list of {rows * cols} numbers")
    try:
        return [float(x) for x in data]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {key}.data holds a non-number ({exc})") from None


def _read(path: Path) -> tuple[dict, int, int]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read camera info {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a camera_calibration mapping (image_width, camera_matrix, ...)")
    try:
        return doc, int(doc["image_width"]), int(doc["image_height"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: image_width and image_height are required integers") from None


def load_camera_yaml(path: str | Path) -> Pinhole:
    """Read fx, fy, cx, cy and the calibrated size from camera_matrix (K).

    K describes the raw image; `reflector infer` rectifies with load_lens_yaml first.
    Falls back to projection_matrix (P) when K is absent.
    """
    path = Path(path)
    doc, width, height = _read(path)
    k = _matrix(doc, "camera_matrix", 3, 3, path)
    if k is not None:
        fx, cx, fy, cy = k[0], k[2], k[4], k[5]
    else:
        p = _matrix(doc, "projection_matrix", 3, 4, path)
        if p is None:
            raise InputError(f"{path}: neither camera_matrix nor projection_matrix is present")
        fx, cx, fy, cy = p[0], p[2], p[5], p[6]
    return check_pinhole(Pinhole(fx, fy, cx, cy, width, height))


def load_lens_yaml(path: str | Path) -> Calibration | None:
    """K, D, R, P of the file at its calibrated size, for rectification (None without K)."""
    path = Path(path)
    doc, width, height = _read(path)
    k = _matrix(doc, "camera_matrix", 3, 3, path)
    if k is None:
        return None
    d = doc.get("distortion_coefficients")
    d_data = d.get("data") if isinstance(d, dict) else [] if d is None else None
    if not isinstance(d_data, list):
        raise InputError(f"{path}: distortion_coefficients.data must be a list of numbers")
    try:
        d_vals = [float(x) for x in d_data]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: distortion_coefficients.data holds a non-number ({exc})") from None
    r = _matrix(doc, "rectification_matrix", 3, 3, path) or [0.0] * 9
    p = _matrix(doc, "projection_matrix", 3, 4, path) or [0.0] * 12
    return calibration(k, d_vals, r, p, str(doc.get("distortion_model") or "plumb_bob"), width, height)
