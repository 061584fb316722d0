"""The one pinhole camera type of the project, with its one resize rule and validation.

Every place that holds a camera (the node's camera_info, `reflector infer`'s YAML and
bags, dataset samples, the synthetic generator, the network input) uses ``Intrinsics``;
every change of resolution goes through ``Intrinsics.scaled`` and every crop through
``Intrinsics.cropped``, so the pixel-centre convention exists once. The metric scale of
the network depends on the focal length, so a bad K is refused loudly rather than turned
into silently wrong depth.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from reflector_ros.core.errors import InputError
from reflector_ros.core.limits import MAX_SIDE, check_size

__all__ = ["Intrinsics", "check_size", "intrinsics_from_k", "k_matrix", "p_matrix", "MAX_SIDE"]


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels of a ``width`` x ``height`` image (REP 104 / image_geometry:
    u = fx·x/z + cx, v = fy·y/z + cy, pixel centres at integer coordinates)."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def centred(cls, focal: float, width: int, height: int) -> "Intrinsics":
        """A camera with fx = fy = ``focal`` (pixels) and the principal point at the image
        centre, ((width - 1) / 2, (height - 1) / 2): what is assumed when only a focal length
        is known (a --fx flag, fallback_fx, a data set's nominal focal)."""
        return cls(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))

    @property
    def focal(self) -> float:
        """(fx + fy) / 2, the focal length the canonical camera compares against."""
        return 0.5 * (self.fx + self.fy)

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera after a plain resize of the whole image to (width, height).

        cv2.resize's pixel-centre convention: pixel u' samples source (u' + 0.5)/s - 0.5,
        so cx' = (cx + 0.5)·s - 0.5 and fx' = fx·s, per axis.
        """
        width, height = check_size(width, height, "camera")
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                          width, height)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> "Intrinsics":
        """The camera of the crop [y0:y0+height, x0:x0+width] (offsets may be negative for padding):
        the focal length stays, the principal point moves."""
        width, height = check_size(width, height, "crop")
        return Intrinsics(self.fx, self.fy, self.cx - x0, self.cy - y0, width, height)

    def mirrored(self) -> "Intrinsics":
        """The camera of the left-right mirrored image: cx' = (width - 1) - cx."""
        return Intrinsics(self.fx, self.fy, (self.width - 1) - self.cx, self.cy, self.width, self.height)

    def checked(self) -> "Intrinsics":
        """self, or InputError when no real camera has these values (size, focal, centre)."""
        check_size(self.width, self.height, "camera")
        for name in ("fx", "fy"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 < v <= 100.0 * max(self.width, self.height)):
                raise InputError(f"camera {name}={v} is not a usable focal length in pixels for a "
                                 f"{self.width}x{self.height} image (0 < f <= 100 x its longer side)")
        for name in ("cx", "cy"):
            v = getattr(self, name)
            if not (math.isfinite(v) and abs(v) < 10 * MAX_SIDE):
                raise InputError(f"camera {name}={v} is not a usable principal point")
        return self


def intrinsics_from_k(k: Sequence[float], width: int, height: int) -> Intrinsics:
    """Row-major 3x3 K (as in CameraInfo.k) -> Intrinsics, refusing unusable values."""
    vals = [float(v) for v in k]
    if len(vals) != 9:
        raise InputError(f"K must have 9 values (row-major 3x3), got {len(vals)}")
    check_size(width, height, "camera")
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"K contains NaN or inf: {vals}")
    if all(v == 0.0 for v in vals):
        raise InputError("K is all zeros: the camera is uncalibrated (camera_info not filled in); "
                         "metric depth needs the focal length")
    fx, fy, cx, cy = vals[0], vals[4], vals[2], vals[5]
    if fx <= 0 or fy <= 0:
        raise InputError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
    return Intrinsics(fx, fy, cx, cy, int(width), int(height))


def k_matrix(intr: Intrinsics) -> list[float]:
    return [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]


def p_matrix(intr: Intrinsics) -> list[float]:
    """P = [K | 0]: the depth is in the camera's own (rectified) frame, no baseline."""
    return [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
