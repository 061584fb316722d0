"""Packed cloud bytes read back through their own field table and checked against the
explicit depth_image_proc formula, computed independently in float64."""
from __future__ import annotations

import math

import numpy as np
import pytest

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import POINT_STEP, backproject, cloud_fields, pack_cloud, ray_lengths, ray_table

INTR = Intrinsics(fx=41.0, fy=39.0, cx=15.3, cy=11.8, width=33, height=25)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 6.0, (INTR.height, INTR.width)).astype(np.float32)
    depth[3, 4] = np.nan
    conf = rng.uniform(0, 1, depth.shape).astype(np.float32)
    rgb = rng.integers(0, 256, (*depth.shape, 3), dtype=np.uint8)
    return depth, conf, rgb


def _read(buf: np.ndarray, with_rgb: bool) -> np.ndarray:
    """Structured view built only from cloud_fields() and the point step, as a consumer would."""
    fields = cloud_fields(with_rgb)
    dt = np.dtype({"names": [f[0] for f in fields], "formats": ["<f4"] * len(fields),
                   "offsets": [f[1] for f in fields], "itemsize": POINT_STEP})
    h, w = buf.shape[:2]
    return np.frombuffer(buf.tobytes(), dtype=dt).reshape(h, w)


def _expected(depth: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:INTR.height:stride, 0:INTR.width:stride].astype(np.float64)
    z = depth[::stride, ::stride].astype(np.float64)
    return (u - INTR.cx) * z / INTR.fx, (v - INTR.cy) * z / INTR.fy, z


def test_fields():
    assert cloud_fields(False) == [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]
    assert cloud_fields(True)[-1] == ("rgb", 12, 7, 1)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_xyz_matches_formula(stride):
    depth, _, _ = _scene()
    rays = ray_table(INTR, stride)
    assert rays.shape == (len(range(0, 25, stride)), len(range(0, 33, stride)), 3)
    buf = pack_cloud(depth, rays, stride=stride)
    assert buf.dtype == np.uint8 and buf.shape[2] == POINT_STEP and buf.flags.c_contiguous
    pts = _read(buf, False)
    ex, ey, ez = _expected(depth, stride)
    for name, ref in (("x", ex), ("y", ey), ("z", ez)):
        got = pts[name].astype(np.float64)
        assert np.array_equal(np.isnan(got), np.isnan(ref))
        ok = ~np.isnan(ref)
        np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-6, atol=1e-7)
    assert np.all(buf[..., 12:] == 0)          # padding is deterministic


def test_backproject():
    depth, _, _ = _scene()
    xyz = backproject(depth, ray_table(INTR))
    ex, ey, ez = _expected(depth, 1)
    ok = ~np.isnan(ez)
    np.testing.assert_allclose(xyz[..., 0][ok], ex[ok], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(xyz[..., 1][ok], ey[ok], rtol=1e-6, atol=1e-7)
    with pytest.raises(InputError):
        backproject(depth[:-1], ray_table(INTR))


def test_range_and_confidence_filters():
    depth, conf, _ = _scene(1)
    rays = ray_table(INTR, 2)
    buf = pack_cloud(depth, rays, stride=2, min_range=1.0, max_range=4.0, confidence=conf, min_confidence=0.4)
    pts = _read(buf, False)
    ex, ey, ez = _expected(depth, 2)
    rng = np.sqrt(ex ** 2 + ey ** 2 + ez ** 2)
    c = conf[::2, ::2]
    valid = (rng >= 1.0) & (rng <= 4.0) & (c >= 0.4)          # NaN range compares False
    assert valid.sum() > 10 and (~valid).sum() > 10
    for name in ("x", "y", "z"):
        assert np.array_equal(~np.isnan(pts[name]), valid), name
    np.testing.assert_allclose(pts["z"][valid], ez[valid], rtol=1e-6)


def test_rgb_round_trip_and_out_reuse():
    depth, _, rgb = _scene(2)
    rays = ray_table(INTR, 2)
    out = np.full((*rays.shape[:2], 4), 123.0, np.float32)
    buf = pack_cloud(depth, rays, stride=2, rgb=rgb, out=out)
    assert np.shares_memory(buf, out)
    packed = _read(buf, True)["rgb"].copy().view(np.uint32)
    sub = rgb[::2, ::2].astype(np.uint32)
    np.testing.assert_array_equal(packed, (sub[..., 0] << 16) | (sub[..., 1] << 8) | sub[..., 2])
    # reusing the same buffer without colour clears the old rgb bytes
    buf2 = pack_cloud(depth, rays, stride=2, out=out)
    assert np.all(buf2[..., 12:] == 0)


@pytest.mark.parametrize("case", ["rays", "rgb", "conf", "out", "stride"])
def test_bad_input(case):
    depth, conf, rgb = _scene()
    rays = ray_table(INTR)
    kwargs: dict = {}
    if case == "rays":
        rays = ray_table(INTR, 2)
    elif case == "rgb":
        kwargs["rgb"] = rgb[:-1]
    elif case == "conf":
        kwargs.update(confidence=conf[:, :-1], min_confidence=0.5)
    elif case == "out":
        kwargs["out"] = np.empty((3, 3, 4), np.float32)
    else:
        kwargs["stride"] = 0
    with pytest.raises(InputError):
        pack_cloud(depth, rays, **kwargs)


def test_all_invalid_is_all_nan():
    depth = np.full((INTR.height, INTR.width), np.nan, np.float32)
    pts = _read(pack_cloud(depth, ray_table(INTR), max_range=math.inf), False)
    assert np.isnan(pts["x"]).all() and np.isnan(pts["z"]).all()


def test_cached_lengths_and_input_untouched():
    """The node passes ray_lengths() cached with the table: same cloud as computing them,
    the caller's depth is never written (filters mask a copy), and a wrong-sized cache is refused."""
    depth, conf, _ = _scene(3)
    before = depth.copy()
    rays = ray_table(INTR)
    kw = dict(min_range=1.0, max_range=4.0, confidence=conf, min_confidence=0.3)
    a = pack_cloud(depth, rays, **kw)
    b = pack_cloud(depth, rays, lengths=ray_lengths(rays), **kw)
    assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(depth, before)
    ex, ey, ez = _expected(depth, 1)
    np.testing.assert_allclose(ray_lengths(rays) * depth, np.sqrt(ex ** 2 + ey ** 2 + ez ** 2), rtol=1e-6)
    with pytest.raises(InputError):
        pack_cloud(depth, rays, lengths=ray_lengths(ray_table(INTR, 2)), **kw)


def test_ray_table_planes_are_contiguous():
    rays = ray_table(INTR, 3)
    assert rays.shape == (math.ceil(INTR.height / 3), math.ceil(INTR.width / 3), 3)
    assert all(rays[..., i].flags.c_contiguous for i in range(3))
    v, u = np.mgrid[0:INTR.height:3, 0:INTR.width:3]
    np.testing.assert_allclose(rays[..., 0], (u - INTR.cx) / INTR.fx, rtol=1e-6)
    np.testing.assert_allclose(rays[..., 1], (v - INTR.cy) / INTR.fy, rtol=1e-6)
    assert np.all(rays[..., 2] == 1.0)
