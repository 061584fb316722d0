"""Raw camera frames undistorted into the camera's rectified pinhole model (P), as image_proc does.

Why: the network, depth/camera_info and every consumer of the depth (depth_image_proc, the
cloud, Nav2) assume a pinhole camera. A raw frame through a lens with distortion breaks that
towards the edges, where a wide-angle webcam is off by several per cent. The maps depend
only on the calibration, so they are built once and each frame is one ``cv2.remap``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from reflector_ros.core.camera import Intrinsics, check_size, intrinsics_from_k
from reflector_ros.core.errors import InputError

# ROS distortion_model names (sensor_msgs/distortion_models) -> OpenCV model
SUPPORTED_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
# The coefficient counts OpenCV takes. Its pinhole model reads D as k1 k2 p1 p2 [k3 [k4 k5 k6
# [s1 s2 s3 s4 [tau_x tau_y]]]], absent terms zero, so plumb_bob and rational_polynomial are
# the same model at different lengths (OAK cameras publish 14). The fisheye model takes k1..k4.
_PINHOLE_LENGTHS = (4, 5, 8, 12, 14)
_D_LENGTHS = {"plumb_bob": _PINHOLE_LENGTHS, "rational_polynomial": _PINHOLE_LENGTHS, "equidistant": (4,)}


@dataclass(frozen=True)
class Calibration:
    """The CameraInfo fields rectification reads, already expressed at the image's size."""
    k: tuple[float, ...]   # 3x3 row-major
    d: tuple[float, ...]
    r: tuple[float, ...]   # 3x3 row-major; all zeros (an unfilled field) means identity
    p: tuple[float, ...]   # 3x4 row-major; fx or fy <= 0 (unfilled) means "use K"
    model: str
    width: int
    height: int


RECTIFY_SETTINGS = ("auto", "true", "false")
_RECT_WORD = re.compile(r"(^|_)rect(ified)?(_|$)")   # image_rect, image_rect_color, rect/image; not "director"


def rectify_setting(value: object) -> str:
    """A rectify switch as given by a user (a bool from YAML or -p, or a word) -> auto/true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    return {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(text, text)


def should_rectify(setting: object, topic: str) -> tuple[bool, str]:
    """Whether to undistort frames from ``topic``, and why (for the log and diagnostics).

    auto trusts ROS naming: image_proc publishes rectified frames as image_rect /
    image_rect_color, so a topic with the word "rect" (or "rectified") in a name part is
    taken as rectified.
    """
    choice = rectify_setting(setting)
    if choice not in RECTIFY_SETTINGS:
        raise InputError(f"rectify '{setting}' is not one of: {', '.join(RECTIFY_SETTINGS)}")
    if choice != "auto":
        return choice == "true", f"rectify is {choice}"
    if any(_RECT_WORD.search(part) for part in topic.lower().split("/")):
        return False, f"auto: {topic} is named as rectified"
    return True, f"auto: {topic} is taken as raw"


def calibration(k: Sequence[float], d: Sequence[float], r: Sequence[float], p: Sequence[float],
                model: str, width: int, height: int) -> Calibration:
    """A checked Calibration; a bad field is an InputError naming it."""
    intrinsics_from_k(k, width, height)          # K: 9 finite values, positive focal lengths
    for name, vals, n in (("R", r, 9), ("P", p, 12)):
        if len(vals) != n or not all(math.isfinite(float(v)) for v in vals):
            raise InputError(f"camera_info {name} must be {n} finite numbers, got {list(vals)}")
    if not all(math.isfinite(float(v)) for v in d):
        raise InputError(f"camera_info D contains NaN or inf: {list(d)}")
    return Calibration(tuple(float(v) for v in k), tuple(float(v) for v in d), tuple(float(v) for v in r),
                       tuple(float(v) for v in p), str(model), int(width), int(height))


def calibration_at(k: Sequence[float], d: Sequence[float], r: Sequence[float], p: Sequence[float], model: str,
                   calibrated_wh: tuple[int, int], image_wh: tuple[int, int],
                   roi: tuple[int, int, int, int] | None = None) -> Calibration:
    """A calibration made at ``calibrated_wh`` expressed for frames of ``image_wh``.

    A region of interest (x, y, w, h) shifts the principal points first, as
    image_geometry does; a different size is then a plain resize (pixel centres as
    cv2.resize). Both are pixel maps applied on the left of K and P; D is in normalised
    coordinates, so neither changes it. A crop without roi cannot be detected.
    """
    cw, ch = (int(v) for v in calibrated_wh)
    intrinsics_from_k(k, cw, ch)   # K and the calibrated size are usable
    w, h = (int(v) for v in image_wh)
    check_size(w, h)
    if len(p) != 12:
        raise InputError(f"camera_info P must have 12 values (row-major 3x4), got {len(p)}")
    to_image = np.eye(3)
    if roi is not None and roi[2] > 0 and roi[3] > 0 and tuple(roi) != (0, 0, cw, ch):
        x0, y0, rw, rh = (int(v) for v in roi)
        if x0 + rw > cw or y0 + rh > ch:
            raise InputError(f"camera_info roi {x0},{y0} {rw}x{rh} lies outside the calibrated {cw}x{ch} image")
        to_image = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        cw, ch = rw, rh
    sx, sy = w / cw, h / ch
    to_image = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]]) @ to_image
    k_img = to_image @ np.asarray(k, np.float64).reshape(3, 3)
    p_img = to_image @ np.asarray(p, np.float64).reshape(3, 4)
    return calibration(k_img.ravel().tolist(), list(d), list(r), p_img.ravel().tolist(), model, w, h)


def _new_camera(cal: Calibration) -> np.ndarray:
    p = np.asarray(cal.p, np.float64).reshape(3, 4)
    return p[:, :3].copy() if p[0, 0] > 0 and p[1, 1] > 0 else np.asarray(cal.k, np.float64).reshape(3, 3)


def _rotation(cal: Calibration) -> np.ndarray:
    r = np.asarray(cal.r, np.float64).reshape(3, 3)
    return np.eye(3) if not r.any() else r


def rectified_intrinsics(cal: Calibration) -> Intrinsics:
    """The pinhole camera of the rectified image: P's left 3x3 (K where P is unfilled)."""
    return intrinsics_from_k(_new_camera(cal).reshape(-1).tolist(), cal.width, cal.height)


def is_identity(cal: Calibration) -> bool:
    """True when rectifying would not move a pixel: no distortion, R = I and P's 3x3 = K."""
    return (not any(cal.d) and np.allclose(_rotation(cal), np.eye(3))
            and np.allclose(_new_camera(cal), np.asarray(cal.k).reshape(3, 3)))


def distortion_coefficients(model: str, d: Sequence[float]) -> np.ndarray:
    """D as OpenCV takes it for ``model``: a count it accepts as it is, and a longer D
    whose extra values are zero (a driver padding to a fixed length) cut to the longest
    accepted count its non-zero values fit in. Anything else is an InputError."""
    if model not in SUPPORTED_MODELS:
        raise InputError(f"camera_info distortion_model '{model}' is not one the node can undistort "
                         f"({', '.join(SUPPORTED_MODELS)}); if the image is already rectified, set rectify:=false")
    vals = np.asarray([float(v) for v in d], np.float64)
    lengths = _D_LENGTHS[model]
    fits = [n for n in lengths if n <= len(vals) and not vals[n:].any()]
    if len(vals) in lengths or fits:
        return vals if len(vals) in lengths else vals[:max(fits)]
    counts = ", ".join(map(str, lengths[:-1])) + (" or " if len(lengths) > 1 else "") + str(lengths[-1])
    raise InputError(f"camera_info D has {len(vals)} coefficients; {model} takes {counts} "
                     f"(or more with only zeros past those)")


def undistort_maps(cal: Calibration) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(map1, map2, valid) for ``rectify``; valid marks the rectified pixels that see the
    raw image (None when all do), so depth outside the lens's view is not invented."""
    distorted = any(cal.d)   # without D only R and P move pixels, and any model name will do
    d = distortion_coefficients(cal.model, cal.d) if distorted else np.zeros(5)
    fisheye = distorted and cal.model == "equidistant"
    init = cv2.fisheye.initUndistortRectifyMap if fisheye else cv2.initUndistortRectifyMap
    k = np.asarray(cal.k, np.float64).reshape(3, 3)
    args = (k, d, _rotation(cal), _new_camera(cal), (cal.width, cal.height))
    m1, m2 = init(*args, cv2.CV_16SC2)
    return m1, m2, _seen(args, init(*args, cv2.CV_32FC1), fisheye)


def _seen(args: tuple, maps: tuple[np.ndarray, np.ndarray], fisheye: bool) -> np.ndarray | None:
    """Rectified pixels whose source lies inside the raw frame and maps back to them.

    The second test matters: a lens polynomial folds back beyond the field it was fitted
    on, so far-off rays land inside the frame on pixels that show something else. OpenCV's
    iterative inverse (undistortPoints) returns the in-field solution, which exposes them.
    """
    mx, my = maps
    h, w = mx.shape
    inside = (mx >= -0.5) & (mx <= w - 0.5) & (my >= -0.5) & (my <= h - 0.5)
    if not inside.any():
        k, p = args[0], args[3]
        raise InputError(f"no rectified pixel falls inside the raw image: K (fx {k[0, 0]:g}) and P (fx {p[0, 0]:g}) "
                         f"do not describe the same lens")
    v, u = np.nonzero(inside)
    raw = np.stack([mx[v, u], my[v, u]], axis=-1).reshape(-1, 1, 2).astype(np.float64)
    k, d, r, p, _ = args
    inverse = cv2.fisheye.undistortPoints if fisheye else cv2.undistortPoints
    back = inverse(raw, k, d, R=r, P=p, criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-9))
    back = back.reshape(-1, 2)
    ok = np.hypot(back[:, 0] - u, back[:, 1] - v) < 0.5
    seen = np.zeros((h, w), bool)
    seen[v[ok], u[ok]] = True
    return None if seen.all() else seen


class Plan(NamedTuple):
    """How the frames of one calibration are used: the pinhole camera their depth lives
    in, the maps to undistort with (None: the frame as it is), the rectified pixels the
    lens saw (None: all), a state for logs and diagnostics, and a warning, if any."""
    intrinsics: Intrinsics
    maps: tuple[np.ndarray, np.ndarray] | None
    seen: np.ndarray | None
    state: str
    warning: str | None = None


def plan(cal: Calibration, setting: object, topic: str) -> Plan:
    """The one rectification decision of the node, `reflector infer` and training bags.

    The depth lives in P's camera (K where P is unfilled) unless the lens model cannot be
    undone: then the frame is used as it is, with K, and a warning says so (raw frames
    with K beat no depth at all). Builds the maps, so call it once per calibration.
    """
    wanted, why = should_rectify(setting, topic)
    if not wanted:
        return Plan(rectified_intrinsics(cal), None, None, f"off ({why})")
    if is_identity(cal):
        return Plan(rectified_intrinsics(cal), None, None, "off (no distortion)")
    try:
        map1, map2, seen = undistort_maps(cal)
    except InputError as exc:
        return Plan(intrinsics_from_k(cal.k, cal.width, cal.height), None, None,
                    f"off (cannot undistort {cal.model})", f"{exc}; using the frames as they are, with K")
    return Plan(rectified_intrinsics(cal), (map1, map2), seen, f"on ({why})")


def rectify(rgb: np.ndarray, map1: np.ndarray, map2: np.ndarray) -> np.ndarray:
    """One bilinear remap; pixels the lens did not see come out black."""
    if rgb.shape[:2] != map1.shape[:2]:
        raise InputError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but the rectification maps are for "
                         f"{map1.shape[1]}x{map1.shape[0]}")
    return cv2.remap(rgb, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
