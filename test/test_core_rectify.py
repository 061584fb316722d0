"""Rectification maps and frames against OpenCV's independent inverse (undistortPoints)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from reflector_ros.core.errors import InputError
from reflector_ros.core.rectify import (calibration, distortion_coefficients, is_identity, plan, rectified_intrinsics,
                                        rectify, should_rectify, undistort_maps)

W, H, F = 160, 120, 140.0
K = [F, 0.0, 79.5, 0.0, F * 1.02, 59.5, 0.0, 0.0, 1.0]
I3 = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
P_WIDE = [0.8 * F, 0.0, 82.0, 0.0, 0.0, 0.8 * F, 57.0, 0.0, 0.0, 0.0, 1.0, 0.0]
LENSES = {
    "plumb_bob": [-0.30, 0.10, 0.002, -0.001, -0.01],
    "rational_polynomial": [0.2, -0.1, 0.001, 0.001, 0.01, 0.45, -0.05, 0.02],
    "equidistant": [0.05, -0.02, 0.004, -0.001],
}


def _cal(model: str, d=None, p=None, r=None):
    return calibration(K, LENSES[model] if d is None else d, I3 if r is None else r,
                       P_WIDE if p is None else p, model, W, H)


def _undistort_points(cal, raw_uv: np.ndarray) -> np.ndarray:
    """Raw pixel -> rectified pixel with OpenCV's iterative inverse of the lens model."""
    k = np.asarray(cal.k).reshape(3, 3)
    d = np.asarray(cal.d)
    p = np.asarray(cal.p).reshape(3, 4)[:, :3]
    pts = raw_uv.reshape(-1, 1, 2).astype(np.float64)
    if cal.model == "equidistant":
        out = cv2.fisheye.undistortPoints(pts, k, d, R=np.eye(3), P=p)
    else:
        out = cv2.undistortPoints(pts, k, d, R=np.eye(3), P=p,
                                  criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9))
    return out.reshape(raw_uv.shape)


@pytest.mark.parametrize("model", sorted(LENSES))
def test_maps_invert_the_lens_model(model):
    cal = _cal(model)
    m1, m2, _ = undistort_maps(cal)
    fx_map, fy_map = cv2.convertMaps(m1, m2, cv2.CV_32FC1)
    v, u = np.mgrid[10:H - 10:7, 10:W - 10:7]
    raw = np.stack([fx_map[v, u], fy_map[v, u]], axis=-1)
    inside = (raw[..., 0] >= 0) & (raw[..., 0] <= W - 1) & (raw[..., 1] >= 0) & (raw[..., 1] <= H - 1)
    assert inside.mean() > 0.5
    back = _undistort_points(cal, raw[inside])
    want = np.stack([u[inside], v[inside]], axis=-1)
    # fixed-point maps hold 1/32 pixel
    assert np.abs(back - want).max() < 0.06, model


# Every coefficient OpenCV's pinhole model reads, all non-zero: k1 k2 p1 p2 k3 k4 k5 k6 s1 s2 s3 s4 tau_x tau_y
FULL_D = [-0.25, 0.08, 0.001, -0.0012, -0.01, 0.30, -0.02, 0.005, 0.002, -0.0005, 0.0015, 0.0003, 0.01, -0.008]
FISHEYE_D = LENSES["equidistant"]


def _opencv_inverse_error(cal, opencv_d: list[float], fisheye: bool | None = None) -> float:
    """Largest distance (px) between a rectified pixel and where OpenCV's own undistortPoints
    (given ``opencv_d``; cv2.fisheye's for equidistant) sends the raw pixel our map fetches for it."""
    m1, m2, _ = undistort_maps(cal)
    mx, my = cv2.convertMaps(m1, m2, cv2.CV_32FC1)
    v, u = np.mgrid[8:H - 8:5, 8:W - 8:5]
    raw = np.stack([mx[v, u], my[v, u]], axis=-1)
    inside = (raw[..., 0] >= 0) & (raw[..., 0] <= W - 1) & (raw[..., 1] >= 0) & (raw[..., 1] <= H - 1)
    assert inside.mean() > 0.5
    k, p = np.asarray(cal.k).reshape(3, 3), np.asarray(cal.p).reshape(3, 4)[:, :3]
    pts = raw[inside].reshape(-1, 1, 2).astype(np.float64)
    if cal.model == "equidistant" if fisheye is None else fisheye:
        back = cv2.fisheye.undistortPoints(pts, k, np.asarray(opencv_d), R=np.eye(3), P=p)
    else:
        back = cv2.undistortPoints(pts, k, np.asarray(opencv_d), R=np.eye(3), P=p,
                                   criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10))
    return float(np.abs(back.reshape(-1, 2) - np.stack([u[inside], v[inside]], axis=-1)).max())


@pytest.mark.parametrize("model", ["plumb_bob", "rational_polynomial"])
@pytest.mark.parametrize("n", [4, 5, 8, 12, 14])
def test_every_pinhole_coefficient_count_opencv_takes(model, n):
    """OAK cameras publish 14 (rational + thin prism + tilt): each count is rectified as OpenCV reads it."""
    d = FULL_D[:n]
    cal = calibration(K, d, I3, P_WIDE, model, W, H)
    np.testing.assert_array_equal(distortion_coefficients(model, d), d)
    assert _opencv_inverse_error(cal, d) < 0.06          # fixed-point maps hold 1/32 pixel
    if n > 4:   # the coefficients past the shorter count are used, not dropped
        shorter = max(m for m in (4, 5, 8, 12) if m < n)
        assert _opencv_inverse_error(cal, d[:shorter]) > 0.2, "the extra coefficients made no difference"
    assert plan(cal, "true", "/cam/image_raw").state.startswith("on")


@pytest.mark.parametrize("model,d,opencv_d", [
    ("equidistant", FISHEYE_D + [0.0] * 4, FISHEYE_D),            # 8 values, the last 4 zero
    ("equidistant", FISHEYE_D + [0.0], FISHEYE_D),
    ("plumb_bob", FULL_D[:5] + [0.0] * 3 + [0.0], FULL_D[:5] + [0.0] * 3),   # 9: zeros past k3
    ("rational_polynomial", FULL_D + [0.0, 0.0], FULL_D),          # 16: zeros past tau_y
    ("plumb_bob", FULL_D[:5] + [0.0], FULL_D[:5]),
])
def test_trailing_zeros_are_dropped(model, d, opencv_d):
    np.testing.assert_array_equal(distortion_coefficients(model, d), opencv_d)
    cal = calibration(K, d, I3, P_WIDE, model, W, H)
    assert _opencv_inverse_error(cal, opencv_d) < 0.06
    assert plan(cal, "auto", "/cam/image_raw").warning is None


def test_fisheye_uses_its_own_model():
    """8 equidistant values are the fisheye model's 4, not a pinhole D of 8."""
    cal = calibration(K, FISHEYE_D + [0.0] * 4, I3, P_WIDE, "equidistant", W, H)
    assert _opencv_inverse_error(cal, FISHEYE_D) < 0.06
    assert _opencv_inverse_error(cal, FISHEYE_D + [0.0] * 4, fisheye=False) > 0.5   # the reference tells them apart


def test_rectified_frame_matches_the_ideal_pinhole_image():
    """Distort an ideal (P-camera) image by hand, then rectify it back."""
    cal = _cal("plumb_bob")
    rng = np.random.default_rng(1)
    ideal = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 2.0)
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    where = _undistort_points(cal, np.stack([u, v], axis=-1)).astype(np.float32)   # raw px -> ideal px
    raw = cv2.remap(ideal, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    m1, m2, seen = undistort_maps(cal)
    out = rectify(raw, m1, m2)
    assert out.shape == ideal.shape
    inner = np.zeros((H, W), bool)
    inner[25:-25, 30:-30] = True
    err = np.abs(out.astype(int) - ideal.astype(int))[inner]
    assert err.mean() < 2.0 and np.percentile(err, 99) < 8
    # without rectification the same pixels are visibly elsewhere
    assert np.abs(raw.astype(int) - ideal.astype(int))[inner].mean() > 3 * err.mean()


def test_unseen_pixels_are_marked():
    cal = _cal("plumb_bob")                       # barrel lens, wider P: corners see past the sensor
    _, _, seen = undistort_maps(cal)
    assert seen is not None and not seen[0, 0] and not seen[-1, -1] and seen[H // 2, W // 2]
    p_tight = [1.3 * F, 0.0, 79.5, 0.0, 0.0, 1.3 * F, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert undistort_maps(_cal("plumb_bob", p=p_tight))[2] is None   # zoomed in: every pixel seen


def test_calibration_that_sees_nothing_is_refused():
    """K a million pixels long against a normal P: no rectified pixel maps into the frame. The
    maps are refused with a message (plan() then falls back to the frames as they are)."""
    k_huge = [1e6, 0.0, 79.5, 0.0, 1e6, 59.5, 0.0, 0.0, 1.0]
    p_half = [0.8 * F, 0.0, 82.5, 0.0, 0.0, 0.8 * F, 57.5, 0.0, 0.0, 0.0, 1.0, 0.0]   # no pixel on its axis
    cal = calibration(k_huge, LENSES["plumb_bob"], I3, p_half, "plumb_bob", W, H)
    with pytest.raises(InputError, match="do not describe the same lens"):
        undistort_maps(cal)
    fallback = plan(cal, True, "image_raw")
    assert fallback.maps is None and "cannot undistort" in fallback.state and "same lens" in fallback.warning


def test_folded_lens_polynomial_is_not_seen():
    """r(1 + k1 r^2) peaks at r = 1/sqrt(3 |k1|): wider rays fold back into the frame."""
    p_wide = [0.45 * F, 0.0, 79.5, 0.0, 0.0, 0.45 * F, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    cal = _cal("plumb_bob", d=[-0.45, 0.0, 0.0, 0.0, 0.0], p=p_wide)
    m1, m2, seen = undistort_maps(cal)
    mx, my = cv2.convertMaps(m1, m2, cv2.CV_32FC1)
    inside = (mx >= 0) & (mx <= W - 1) & (my >= 0) & (my <= H - 1)
    folded = inside & ~seen
    assert folded.sum() > 100                       # the corners land inside the frame, folded
    assert not folded[H // 2 - 10:H // 2 + 10, W // 2 - 10:W // 2 + 10].any()
    v, u = np.nonzero(folded)
    r = np.hypot((u - 79.5) / (0.45 * F), (v - 59.5) / (0.45 * F))
    assert r.min() > 1 / math.sqrt(3 * 0.45) - 0.05   # only beyond the fold


def test_identity_and_intrinsics():
    p_k = [K[0], 0.0, K[2], 0.0, 0.0, K[4], K[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    assert is_identity(calibration(K, [0.0] * 5, I3, p_k, "plumb_bob", W, H))
    assert is_identity(calibration(K, [], [0.0] * 9, [0.0] * 12, "", W, H))    # unfilled R, P, D
    assert not is_identity(_cal("plumb_bob"))
    assert not is_identity(calibration(K, [0.0] * 5, I3, P_WIDE, "plumb_bob", W, H))   # P != K moves pixels
    intr = rectified_intrinsics(_cal("plumb_bob"))
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (0.8 * F, 0.8 * F, 82.0, 57.0)
    intr = rectified_intrinsics(calibration(K, [0.0] * 5, I3, [0.0] * 12, "plumb_bob", W, H))
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (K[0], K[4], K[2], K[5])


def test_p_and_r_without_distortion_need_no_model_name():
    m1, m2, _ = undistort_maps(calibration(K, [], I3, P_WIDE, "", W, H))
    fx_map, _ = cv2.convertMaps(m1, m2, cv2.CV_32FC1)
    # a pure change of pinhole camera: u_raw = K.fx * (u - P.cx) / P.fx + K.cx
    assert fx_map[60, 100] == pytest.approx(K[0] * (100 - 82.0) / (0.8 * F) + K[2], abs=0.04)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(model="kannala_brandt_8", d=[0.1] * 8), "distortion_model 'kannala_brandt_8'"),
    (dict(model="kannala_brandt_8", d=[0.1] * 8), "rectify:=false"),
    (dict(model="equidistant", d=[0.1] * 5), "equidistant takes 4 .or more with only zeros past those"),
    (dict(model="equidistant", d=[0.1] * 3), "D has 3 coefficients; equidistant takes 4"),
    (dict(model="plumb_bob", d=[0.1] * 3), "plumb_bob takes 4, 5, 8, 12 or 14"),
    (dict(model="rational_polynomial", d=[0.1] * 6), "D has 6 coefficients; rational_polynomial takes 4, 5, 8, 12 or 14"),
    (dict(model="plumb_bob", d=[0.1] * 15), "D has 15 coefficients"),
])
def test_unusable_lens_models_are_refused(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        undistort_maps(calibration(K, kwargs["d"], I3, P_WIDE, kwargs["model"], W, H))


@pytest.mark.parametrize("field,value,needle", [
    ("d", [math.nan, 0, 0, 0, 0], "D contains NaN"),
    ("p", [1.0] * 9, "P must be 12"),
    ("r", [1.0] * 8, "R must be 9"),
    ("k", [0.0] * 9, "all zeros"),
])
def test_bad_calibration_fields(field, value, needle):
    args = dict(k=K, d=[0.0] * 5, r=I3, p=P_WIDE)
    args[field] = value
    with pytest.raises(InputError, match=needle):
        calibration(args["k"], args["d"], args["r"], args["p"], "plumb_bob", W, H)


@pytest.mark.parametrize("setting,topic,want", [
    ("auto", "/camera/color/image_raw", True), ("auto", "/cam/image", True),
    ("auto", "/camera/image_rect_color", False), ("auto", "/stereo/left/rect/image", False),
    ("auto", "/director/image_raw", True), ("auto", "/cam/correct_image", True), ("auto", "/cam/image_rectified", False),
    (True, "/camera/image_rect", True), ("false", "/camera/image_raw", False), ("on", "/x/image_rect", True),
])
def test_rectify_decision(setting, topic, want):
    got, why = should_rectify(setting, topic)
    assert got is want and why


def test_rectify_setting_refuses_junk():
    with pytest.raises(InputError, match="rectify 'maybe' is not one of: auto, true, false"):
        should_rectify("maybe", "/cam/image")


def test_frame_of_another_size_is_refused():
    m1, m2, _ = undistort_maps(_cal("plumb_bob"))
    with pytest.raises(InputError, match="maps are for 160x120"):
        rectify(np.zeros((H + 2, W, 3), np.uint8), m1, m2)
