"""Metric scale from the robot's own geometry: the camera's height above the floor.

A ground robot knows how high its camera is (its URDF says so). Wherever the floor is in
view, that one number fixes the metric scale of the whole frame, however right or wrong
the network's own scale is:

    scale = camera_height / (distance of the camera to the floor plane found in the depth)

Per frame, ``fit_floor`` measures the heights of a subsample of the lower view's
back-projected points below the camera, along the expected up direction or along the
normal of a plane that RANSAC (Fischler & Bolles 1981) fits near it, and takes the floor
as the lowest level surface that holds enough of them (a table top is level too).
Thresholds are relative to the distance, so the fit does not depend on the depth's
(unknown) scale. Over time, ``FloorAnchor`` refuses corrections beyond
``max_correction``, guards against one odd frame with the median of the last few, holds
the last good scale for ``hold_s`` seconds while the floor is out of view, then falls
back to the model's own scale.

Frames (REP 103): points are in the camera's optical frame (x right, y down, z forward).
Camera pitch is positive when the camera looks down, roll positive when it turns about
its optical axis from the image's +x towards +y, both from level.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import ray_lengths, ray_table

MODES = ("none", "floor")
NORMALS = ("expected", "fitted")
SOURCES = ("floor", "held", "model")
SIN_3DEG = math.sin(math.radians(3.0))     # a floor ray points at least this far below the horizon


@dataclass(frozen=True)
class AnchorSettings:
    """The ``scale_anchor.*`` parameters.

    mode: none | floor. camera_height: metres from the floor to the optical centre.
    pitch_deg, roll_deg: the camera's expected attitude (REP 103 sense, see the module);
    tolerance_deg: how far the floor normal may be from the expected up direction.
    normal: the direction the camera-to-floor distance is measured along: ``fitted`` (the
    normal of the plane fitted to the depth; works without a known attitude) or ``expected``
    (the up direction from pitch and roll, which must then be right: the network's floor
    points give the plane's height but not its tilt, which learned depth gets wrong more
    often than its height).
    hold_s: how long the last good scale is held while the floor is out of view.
    min_inliers: fraction of the sampled lower-view points the floor must explain.
    window: accepted frames whose median guards against one odd frame (``FloorAnchor``).
    max_correction: the largest factor either way by which the floor may correct the
    network's own scale; a frame asking for more is taken to show no floor.
    """
    mode: str = "none"
    camera_height: float = 0.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0
    tolerance_deg: float = 35.0
    normal: str = "fitted"
    hold_s: float = 2.0
    min_inliers: float = 0.2
    window: int = 3
    max_correction: float = 1.5

    def check(self) -> "AnchorSettings":
        """self, or InputError naming what is wrong."""
        if self.mode not in MODES:
            raise InputError(f"scale_anchor.mode '{self.mode}' is not one of: {', '.join(MODES)}")
        if self.mode == "floor" and not (0.02 <= self.camera_height <= 20.0):
            raise InputError(f"scale_anchor.camera_height must be in [0.02, 20] metres with mode floor, "
                             f"got {self.camera_height}")
        if not (-89.0 <= self.pitch_deg <= 89.0 and -180.0 <= self.roll_deg <= 180.0):
            raise InputError(f"scale_anchor.pitch_deg must be in [-89, 89] and scale_anchor.roll_deg in [-180, 180], "
                             f"got {self.pitch_deg}, {self.roll_deg}")
        if not 1.0 <= self.tolerance_deg <= 80.0:
            raise InputError(f"scale_anchor.tolerance_deg must be in [1, 80], got {self.tolerance_deg}")
        if self.normal not in NORMALS:
            raise InputError(f"scale_anchor.normal '{self.normal}' is not one of: {', '.join(NORMALS)}")
        if not 0.0 <= self.hold_s <= 3600.0:
            raise InputError(f"scale_anchor.hold_s must be in [0, 3600] seconds, got {self.hold_s}")
        if not 0.01 <= self.min_inliers <= 1.0:
            raise InputError(f"scale_anchor.min_inliers must be in [0.01, 1], got {self.min_inliers}")
        if not isinstance(self.window, int) or not 1 <= self.window <= 1000:
            raise InputError(f"scale_anchor.window must be in [1, 1000] frames, got {self.window}")
        if not 1.05 <= self.max_correction <= 10.0:
            raise InputError(f"scale_anchor.max_correction must be in [1.05, 10], got {self.max_correction}")
        return self


def up_direction(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """The world's up direction in the optical frame of a camera pitched down by pitch_deg and
    rolled by roll_deg: (0, -1, 0) for a level camera, (0, 0, -1) looking straight down."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    return np.array([-math.cos(p) * math.sin(r), -math.cos(p) * math.cos(r), -math.sin(p)])


@dataclass(frozen=True)
class FloorFit:
    normal: np.ndarray        # (3,) unit normal, pointing from the floor towards the camera
    distance: float           # camera to floor plane, in the depth's units (metres if it is metric)
    inlier_fraction: float    # of the sampled points
    points: int               # points sampled


def fit_floor(depth: np.ndarray, camera: Intrinsics, up: np.ndarray, tolerance_deg: float = 35.0,
              min_inliers: float = 0.2, samples: int = 1500, iterations: int = 64,
              rng: np.random.Generator | None = None, normal: str = "fitted") -> FloorFit | None:
    """The floor plane in a depth map, or None when no level surface explains enough points.

    depth: (h, w) metres along optical z (NaN or <= 0 invalid), in ``camera``'s pixels.
    up: (3,) expected up direction in the optical frame (``up_direction``). Points come from
    the pixels whose rays point more than 3 degrees below the horizon (the lower part of the
    view for a level camera; any pitch and roll), about ``samples`` of them on a regular grid.

    normal: the direction heights are measured along. ``expected``: ``up`` itself, which needs
    a right ``up`` but not a right tilt of the floor in the depth (learned depth gets a
    floor's height better than its tilt). ``fitted``: the normal of the plane that RANSAC
    (Fischler & Bolles 1981) finds among the points within ``tolerance_deg`` of ``up``, refined
    by least squares, so a rough ``up`` is enough.

    Along that direction each point has a height below the camera. Level surfaces are where
    the points' heights crowd: runs of heights whose every +-5 % window (scale-free) holds
    ``min_inliers`` of the points. The floor is the *lowest* of them, since a table top or a
    counter is level too and can fill more of the view. Its distance is the median height of
    its points (``expected``) or the least-squares plane through them (``fitted``).
    """
    h, w = depth.shape
    if normal not in NORMALS:
        raise InputError(f"normal '{normal}' is not one of: {', '.join(NORMALS)}")
    if (w, h) != (camera.width, camera.height):
        raise InputError(f"depth {w}x{h} does not match its camera {camera.width}x{camera.height}")
    up = np.asarray(up, np.float64).reshape(3)
    if not (np.isfinite(up).all() and np.linalg.norm(up) > 1e-9):
        raise InputError(f"up must be a finite non-zero 3-vector, got {up}")
    up = up / np.linalg.norm(up)
    # the pixels whose rays point at least 3 degrees below the horizon (below the camera's
    # level plane along ``up``, whatever the pitch and roll), about ``samples`` of them
    below = float(_below_horizon(ray_table(camera, max(1, min(h, w) // 16)), up).mean())
    if below == 0:
        return None
    step = max(1, int(math.sqrt(h * w * below / samples)))
    rays = ray_table(camera, step)
    z = depth[::step, ::step].astype(np.float64)
    ok = _below_horizon(rays, up) & np.isfinite(z) & (z > 0)
    if ok.sum() < 30:
        return None
    pts = rays[ok].astype(np.float64) * z[ok, None]
    n = len(pts)
    cos_tol = math.cos(math.radians(tolerance_deg))
    direction = up
    if normal == "fitted":
        best = _best_plane(pts, up, cos_tol, iterations, rng or np.random.default_rng(0))
        if best is None:
            return None
        direction = _plane_through(pts[best[2]], up)[0]
        if direction @ up < cos_tol:
            return None
    floor = _lowest_level(-(pts @ direction), min_inliers * n)
    if floor is None:
        return None
    dist, mask = floor
    if normal == "fitted":
        direction, dist = _plane_through(pts[mask], up)
        if direction @ up < cos_tol or dist <= 0:
            return None
    return FloorFit(direction, dist, float(mask.mean()), n)


def _below_horizon(rays: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(h', w') bool: the rays (``ray_table``) pointing more than 3 degrees below the horizon."""
    return -(rays @ up) / ray_lengths(rays) > SIN_3DEG


def _plane_through(p: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane through points (k, 3): (unit normal on ``up``'s side, distance of
    the origin from it along the normal)."""
    centre = p.mean(axis=0)
    nrm = np.linalg.svd(p - centre, full_matrices=False)[2][2]
    nrm = nrm if nrm @ up > 0 else -nrm
    return nrm, float(-(nrm @ centre))


def _lowest_level(heights: np.ndarray, min_count: float, band: float = 0.05
                  ) -> tuple[float, np.ndarray] | None:
    """(height, member mask) of the lowest level surface among points' heights below the
    camera (n,), or None. A level surface is a run of heights over which every +-``band``
    (relative) window holds ``min_count`` points or more, so a floor the depth tilts a few
    degrees, whose heights spread, stays one surface; its height is its points' median."""
    pos = heights > 0
    if pos.sum() < max(min_count, 3):
        return None
    lh = np.log(np.where(pos, heights, 1.0))
    srt = np.sort(lh[pos])
    grid = np.arange(srt[0], srt[-1] + 0.01, 0.01)
    dense = (np.searchsorted(srt, grid + band) - np.searchsorted(srt, grid - band)) >= min_count
    if not dense.any():
        return None
    end = int(np.flatnonzero(dense)[-1])                   # the largest height: the lowest surface
    start = end
    while start > 0 and dense[start - 1]:
        start -= 1
    mask = pos & (lh >= grid[start] - band) & (lh <= grid[end] + band)
    return float(np.exp(np.median(lh[mask]))), mask


def _best_plane(pts: np.ndarray, up: np.ndarray, cos_tol: float, iterations: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, float, np.ndarray] | None:
    """RANSAC: (unit normal towards the camera, distance d > 0, inlier mask) of the plane near
    ``up`` (cosine >= cos_tol) with the most points within 3 % of d, or None."""
    n = len(pts)
    if n < 3:
        return None
    triples = rng.integers(0, n, (iterations, 3))
    a, b, c = pts[triples[:, 0]], pts[triples[:, 1]], pts[triples[:, 2]]
    normals = np.cross(b - a, c - a)
    norm = np.linalg.norm(normals, axis=1)
    good = norm > 1e-12
    normals[good] /= norm[good, None]
    normals[normals @ up < 0] *= -1.0                      # orient towards the camera's side
    d = -(normals * a).sum(axis=1)                         # n·p + d = 0; d > 0: the camera is above
    good &= (normals @ up >= cos_tol) & (d > 0)
    if not good.any():
        return None
    normals, d = normals[good], d[good]
    inliers = np.abs(pts @ normals.T + d) < 0.03 * d       # (n, planes)
    k = int(np.argmax(inliers.sum(axis=0)))
    return normals[k], float(d[k]), inliers[:, k]


@dataclass(frozen=True)
class AnchorState:
    """What /diagnostics reports: the scale in use, where it came from, the last fit's inliers."""
    scale: float
    source: str               # floor | held | model
    inlier_fraction: float    # of the last frame's fit, 0 when none
    raw_scale: float          # this frame's own camera_height / distance, NaN when no floor


class FloorAnchor:
    """The scale over time: each frame's floor scale, checked against the recent ones, held
    while the floor is out of view, then the model's own scale (1.0). Not thread-safe: one
    caller.

    A frame's floor scale is used only within ``max_correction`` of the network's own (a
    counter top or a sofa seat taken for the floor with no floor in view asks for 1.5-4x on
    HoloLens frames). It is used as it is when within ``FOLLOW`` of the median of the last
    ``window`` accepted ones, since the network's scale itself changes from frame to frame
    and the floor follows it; otherwise that median is used, so one odd frame cannot yank
    the scale.
    """

    FOLLOW = 0.1   # |log(frame scale / recent median)| up to which a frame's own floor scale is used

    def __init__(self, settings: AnchorSettings) -> None:
        self.settings = settings.check()
        self.up = up_direction(settings.pitch_deg, settings.roll_deg)
        self._recent: deque[float] = deque(maxlen=settings.window)
        self._last_good_t: float | None = None
        self._last_t: float | None = None
        self.state = AnchorState(1.0, "model", 0.0, float("nan"))

    def reset(self) -> None:
        """A restarted source (bag loop, new camera): forget the old scale."""
        self._recent.clear()
        self._last_good_t = self._last_t = None
        self.state = AnchorState(1.0, "model", 0.0, float("nan"))

    def update(self, depth: np.ndarray, camera: Intrinsics, t: float, camera_height: float | None = None,
               up: np.ndarray | None = None) -> AnchorState:
        """One frame's depth (network resolution is enough) and its time in seconds -> the
        scale to multiply this frame's depth by. ``camera_height`` and ``up`` (3,) override
        the settings' height and attitude for this frame (a camera whose mount moves, or the
        real-data check, which knows both from the poses)."""
        s = self.settings
        if self._last_t is not None and t < self._last_t:
            self.reset()
        self._last_t = t
        height = s.camera_height if camera_height is None else float(camera_height)
        if not (math.isfinite(height) and height > 0):
            raise InputError(f"camera_height must be a positive number of metres, got {height}")
        fit = fit_floor(depth, camera, self.up if up is None else up, s.tolerance_deg, s.min_inliers,
                        normal=s.normal)
        raw = height / fit.distance if fit is not None else float("nan")
        inliers = fit.inlier_fraction if fit is not None else 0.0
        if fit is not None and abs(math.log(raw)) <= math.log(s.max_correction):
            self._recent.append(raw)
            self._last_good_t = t
            median = float(np.median(self._recent))
            scale = raw if abs(math.log(raw / median)) <= self.FOLLOW else median
            self.state = AnchorState(scale, "floor", inliers, raw)
        elif self._last_good_t is not None and t - self._last_good_t <= s.hold_s and self._recent:
            self.state = AnchorState(float(np.median(self._recent)), "held", inliers, raw)
        else:
            self._recent.clear()
            self.state = AnchorState(1.0, "model", inliers, raw)
        return self.state
