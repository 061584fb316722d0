"""DepthPipeline without ROS: one frame's path (calibration, rectification, network, validity,
cloud) on a real tiny model, through the ONNX Runtime and torch backends."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reflector_ros.backends import make_backend
from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.camera_info import CameraInfoFields
from reflector_ros.pipeline import CloudSettings, DepthPipeline, FrameSettings

H, W = 120, 160
K = (150.0, 0.0, 79.5, 0.0, 152.0, 59.5, 0.0, 0.0, 1.0)
P = (150.0, 0.0, 79.5, 0.0, 0.0, 152.0, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0)


def _frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([255 * xx / W, 255 * yy / H, 128 + 60 * np.sin(xx / 7 + yy / 11)], -1)
    img[rng.integers(0, H // 2):, rng.integers(0, W // 2):] *= 0.6
    return np.clip(img, 0, 255).astype(np.uint8)


def _fields(k=K, d=(0.0,) * 5, p=P, width=W, height=H) -> CameraInfoFields:
    return CameraInfoFields(tuple(k), tuple(d), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), tuple(p), "plumb_bob", width, height)


@pytest.fixture(scope="module", params=["onnxruntime", "torch-cpu"])
def pipe(request, tiny_model_dir: Path) -> DepthPipeline:
    model = tiny_model_dir / ("tiny.onnx" if request.param == "onnxruntime" else "tiny.pt")
    return DepthPipeline(make_backend(request.param, model, num_threads=1))


def test_camera_info_and_plain_intrinsics_give_the_same_depth(pipe) -> None:
    a = pipe.process(_frame(), _fields(), FrameSettings())
    b = pipe.process(_frame(), Intrinsics(150.0, 152.0, 79.5, 59.5, W, H), FrameSettings())
    np.testing.assert_allclose(a.depth, b.depth, rtol=1e-6)
    assert a.camera == b.camera == Intrinsics(150.0, 152.0, 79.5, 59.5, W, H)
    assert a.plan.rectify_state == "off (no distortion)"


def test_output_scale_and_the_cloud_follow_the_camera(pipe) -> None:
    """The cloud is the depth back-projected through the output camera; a new calibration of
    the same size (another fx) gives a new ray table, on the device too."""
    settings = FrameSettings(output_scale=0.5, cloud=CloudSettings(stride=1, rgb=False))
    for fx in (150.0, 90.0):
        k = (fx, 0.0, 79.5, 0.0, fx, 59.5, 0.0, 0.0, 1.0)
        res = pipe.process(_frame(), _fields(k=k, p=(fx, 0, 79.5, 0, 0, fx, 59.5, 0, 0, 0, 1, 0)), settings)
        cam = res.camera
        assert res.depth.shape == (60, 80) and cam.fx == pytest.approx(fx / 2)
        v, u = np.mgrid[0:60, 0:80]
        ok = np.isfinite(res.depth)
        np.testing.assert_allclose(res.cloud[..., 2][ok], res.depth[ok], rtol=1e-6)
        np.testing.assert_allclose(res.cloud[..., 0][ok], ((u - cam.cx) / cam.fx * res.depth)[ok], rtol=1e-5, atol=1e-6)


def test_validity_and_unseen_pixels(pipe) -> None:
    """A barrel lens whose P is wider than the sensor: rectified corners the lens never saw
    are NaN in depth and cloud and 0 in confidence; the range limits cut the rest."""
    fields = _fields(d=(-0.35, 0.12, 0.0, 0.0, 0.0), p=(110.0, 0, 79.5, 0, 0, 110.0, 59.5, 0, 0, 0, 1, 0))
    free = pipe.process(_frame(), fields, FrameSettings())
    assert free.plan.rectify_state.startswith("on") and free.plan.seen is not None
    unseen = ~free.plan.seen
    assert unseen.sum() > 50 and np.isnan(free.depth[unseen]).all() and (free.confidence[unseen] == 0).all()
    d = free.depth[np.isfinite(free.depth)]
    lo, hi = np.quantile(d, [0.2, 0.8])
    res = pipe.process(_frame(), fields, FrameSettings(min_depth=float(lo), max_depth=float(hi),
                                                      cloud=CloudSettings(rgb=True)))
    keep = np.isfinite(free.depth) & (free.depth >= lo) & (free.depth <= hi)
    np.testing.assert_array_equal(np.isfinite(res.depth), keep)
    np.testing.assert_array_equal(np.isfinite(res.cloud[..., 2]), keep)


def test_notes_come_with_the_first_frame_of_a_calibration(pipe) -> None:
    odd = _fields(width=80, height=80)                      # a square calibration for a 4:3 image
    first = pipe.process(_frame(), odd, FrameSettings())
    again = pipe.process(_frame(1), odd, FrameSettings())
    assert first.new_plan and not again.new_plan
    assert any("another aspect ratio" in n for n in first.plan.notes)
    p_only = pipe.process(_frame(), _fields(k=(0.0,) * 9), FrameSettings(), topic="/cam/image_rect")
    assert p_only.camera == Intrinsics(150.0, 152.0, 79.5, 59.5, W, H)
    assert any("taken as rectified" in n for n in p_only.plan.notes)


def test_network_input_follows_the_camera_for_canonical_models(tmp_path: Path) -> None:
    """A canonical-camera model resizes each frame by f_c / f: twice the focal length, half
    the network input (and a focal scale of 1 either way)."""
    import torch

    from reflector_ros.meta import ModelMeta
    from reflector_ros.model.export import export_onnx
    from reflector_ros.model.reflector import build_model

    torch.manual_seed(0)
    meta = ModelMeta(arch="small", input_height=64, input_width=80, n_bins=16, input_mode="canonical",
                     focal_canonical=60.0)
    path = export_onnx(build_model(meta).eval(), meta, tmp_path, "canon")["fused"]
    pipe = DepthPipeline(make_backend("onnxruntime", path, num_threads=1))
    wide = pipe.process(_frame(), Intrinsics(100.0, 100.0, 79.5, 59.5, W, H), FrameSettings())
    tele = pipe.process(_frame(), Intrinsics(200.0, 200.0, 79.5, 59.5, W, H), FrameSettings())
    assert (wide.plan.net.height, wide.plan.net.width) == (72, 96)
    assert (tele.plan.net.height, tele.plan.net.width) == (36, 48)
    assert wide.plan.net.focal_scale == pytest.approx(1.0, abs=0.01)
    assert tele.plan.net.focal_scale == pytest.approx(1.0, abs=0.02)
    assert wide.depth.shape == tele.depth.shape == (H, W)
