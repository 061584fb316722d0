"""Intrinsics validation and rescaling, checked against cv2.resize's own pixel mapping."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from reflector_ros.core.camera import Intrinsics, intrinsics_from_k, k_matrix, p_matrix
from reflector_ros.core.errors import InputError

K = [525.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]


def test_from_k():
    intr = intrinsics_from_k(K, 640, 480)
    assert intr == Intrinsics(525.0, 520.0, 319.5, 239.5, 640, 480)
    assert k_matrix(intr) == K
    p = np.array(p_matrix(intr)).reshape(3, 4)
    np.testing.assert_array_equal(p[:, :3], np.array(K).reshape(3, 3))
    np.testing.assert_array_equal(p[:, 3], 0.0)


@pytest.mark.parametrize("k,needle", [
    ([0.0] * 9, "all zeros"),
    ([0.0, 0, 320, 0, 500, 240, 0, 0, 1], "positive"),
    ([500.0, 0, 320, 0, -500, 240, 0, 0, 1], "positive"),
    ([math.nan, 0, 320, 0, 500, 240, 0, 0, 1], "NaN or inf"),
    ([math.inf, 0, 320, 0, 500, 240, 0, 0, 1], "NaN or inf"),
    ([500.0, 0, 320, 0, 500, 240], "9 values"),
])
def test_bad_k(k, needle):
    with pytest.raises(InputError, match=needle):
        intrinsics_from_k(k, 640, 480)


@pytest.mark.parametrize("w,h", [(0, 480), (640, 0), (100000, 480)])
def test_bad_size(w, h):
    with pytest.raises(InputError, match="image size"):
        intrinsics_from_k(K, w, h)


@pytest.mark.parametrize("dst", [(320, 240), (1280, 960), (333, 517), (640, 480)])
def test_scale_round_trip(dst):
    intr = intrinsics_from_k(K, 640, 480)
    there = intr.scaled(*dst)
    assert (there.width, there.height) == dst
    back = there.scaled(640, 480)
    for a, b in zip((back.fx, back.fy, back.cx, back.cy), (intr.fx, intr.fy, intr.cx, intr.cy)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("src,dst", [((64, 48), (128, 96)), ((64, 48), (32, 24)), ((64, 48), (101, 37))])
def test_principal_point_matches_cv2_resize(src, dst):
    """Resize a coordinate ramp with cv2.resize; the scaled cx/cy must land on the same
    source coordinate as the original cx/cy, and fx must match the ramp's slope."""
    w, h = src
    intr = Intrinsics(50.0, 40.0, 30.3, 21.7, w, h)
    scaled = intr.scaled(*dst)
    ramp_u = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    ramp_v = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    ru = cv2.resize(ramp_u, dst, interpolation=cv2.INTER_LINEAR)[0]
    rv = cv2.resize(ramp_v, dst, interpolation=cv2.INTER_LINEAR)[:, 0]
    inner_u = slice(2, dst[0] - 2)   # away from the clamped borders
    inner_v = slice(2, dst[1] - 2)
    cols = np.arange(dst[0])[inner_u]
    rows = np.arange(dst[1])[inner_v]
    assert np.interp(scaled.cx, cols, ru[inner_u]) == pytest.approx(intr.cx, abs=1e-3)
    assert np.interp(scaled.cy, rows, rv[inner_v]) == pytest.approx(intr.cy, abs=1e-3)
    # a ray's angle is preserved: (u - cx)/fx is the same for corresponding pixels
    u_src = 10.0
    u_dst = (u_src + 0.5) * dst[0] / w - 0.5
    assert (u_dst - scaled.cx) / scaled.fx == pytest.approx((u_src - intr.cx) / intr.fx, rel=1e-12)


def test_crop_and_mirror_keep_rays() -> None:
    """A crop moves the principal point by its offset; a mirror reflects it; rays agree."""
    intr = Intrinsics(50.0, 40.0, 30.3, 21.7, 64, 48)
    crop = intr.cropped(10, 5, 32, 24)
    assert (crop.fx, crop.fy, crop.cx, crop.cy, crop.width, crop.height) == (50.0, 40.0, 20.3, 16.7, 32, 24)
    u, v = 17.0, 9.0   # a pixel of the crop is pixel (u + 10, v + 5) of the frame
    assert (u - crop.cx) / crop.fx == pytest.approx((u + 10 - intr.cx) / intr.fx)
    assert (v - crop.cy) / crop.fy == pytest.approx((v + 5 - intr.cy) / intr.fy)
    m = intr.mirrored()
    assert (63 - 12.0 - m.cx) / m.fx == pytest.approx(-(12.0 - intr.cx) / intr.fx)
    assert m.mirrored().cx == pytest.approx(intr.cx)


@pytest.mark.parametrize("bad", [dict(fx=float("nan")), dict(fy=-3.0), dict(cx=float("inf")), dict(width=0)])
def test_checked_refuses_what_no_camera_has(bad) -> None:
    good = dict(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
    assert Intrinsics(**good).checked() == Intrinsics(**good)
    with pytest.raises(InputError):
        Intrinsics(**{**good, **bad}).checked()
