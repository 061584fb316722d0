"""The core on one real RGB-D frame (HoloLens office): real JPEG bytes, real 16-bit depth."""
from __future__ import annotations

import json

import cv2
import numpy as np

from reflector_ros.core.camera import intrinsics_from_k
from reflector_ros.core.decode import decode_compressed, image_size_from_header
from reflector_ros.core.depth import Validity, colorize, finalize_depth, to_millimetres
from reflector_ros.core.pointcloud import pack_cloud, ray_table


def _frame(hololens_dir, i: int = 0) -> dict:
    return json.loads((hololens_dir / "manifest.json").read_text())["frames"][i]


def test_real_jpeg_decodes_like_imread(hololens_dir):
    f = _frame(hololens_dir)
    path = hololens_dir / f["rgb"]
    data = np.frombuffer(path.read_bytes(), np.uint8)
    assert image_size_from_header(data) == ("jpeg", f["width"], f["height"])
    rgb = decode_compressed(data, "rgb8; jpeg compressed bgr8")
    np.testing.assert_array_equal(rgb, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


def test_real_depth_round_trip_and_cloud(hololens_dir):
    f = _frame(hololens_dir)
    raw = cv2.imread(str(hololens_dir / f["depth"]), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (f["height"], f["width"])
    metres = raw.astype(np.float32) / np.float32(f["depth_scale"])
    depth = finalize_depth(metres, None, Validity(0.1, f["max_depth"]))
    valid = ~np.isnan(depth)
    assert 0.3 < valid.mean() <= 1.0                       # mostly valid indoor depth
    assert not np.any(depth == 0.0)                        # REP 118: invalid is NaN, never 0
    # millimetres back out exactly where valid, 0 elsewhere
    mm = to_millimetres(depth)
    np.testing.assert_array_equal(mm[valid], raw[valid])
    assert np.all(mm[~valid] == 0)
    assert colorize(depth, 0.1, f["max_depth"])[~valid].max() == 0

    k = [f["fx"], 0, f["cx"], 0, f["fy"], f["cy"], 0, 0, 1]
    intr = intrinsics_from_k(k, f["width"], f["height"])
    pts = pack_cloud(depth, ray_table(intr, 4), stride=4, max_range=8.0).view(np.float32)
    z = depth[::4, ::4].astype(np.float64)
    v, u = np.mgrid[0:f["height"]:4, 0:f["width"]:4]
    x_ref = (u - f["cx"]) * z / f["fx"]
    rng = np.sqrt(x_ref ** 2 + ((v - f["cy"]) * z / f["fy"]) ** 2 + z ** 2)
    keep = rng <= 8.0
    assert np.array_equal(~np.isnan(pts[..., 2]), keep)
    np.testing.assert_allclose(pts[..., 0][keep], x_ref[keep], rtol=1e-6, atol=1e-6)
    # an office: the median point sits a few metres in front of the camera
    assert 0.5 < np.median(pts[..., 2][keep]) < 6.0
