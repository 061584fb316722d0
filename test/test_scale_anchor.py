"""The floor scale anchor: the camera height fixes the metric scale of a network whose own
scale is off by a known factor, through the real pipeline and ONNX Runtime backend."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from anchor_helpers import encode_depth, floor_share, robot_view, truth_model
from reflector_ros.backends import make_backend
from reflector_ros.core.errors import InputError
from reflector_ros.core.scale_anchor import AnchorSettings, FloorAnchor, fit_floor, up_direction
from reflector_ros.pipeline import DepthPipeline, FrameSettings

H, W, CAM_H, PITCH = 96, 128, 0.35, 12.0
SEEDS = (3, 11, 17)


@pytest.fixture(scope="module")
def views() -> list:
    out = []
    for seed in SEEDS:
        depth, cam = robot_view(seed, H, W, CAM_H, PITCH)
        assert floor_share(depth, cam, CAM_H, PITCH) > 0.3, seed     # the floor is really in view
        out.append((depth, cam))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[float, Path]:
    d = tmp_path_factory.mktemp("truth")
    return {k: truth_model(d, H, W, k) for k in (0.7, 1.0, 1.4)}


def test_up_direction_conventions() -> None:
    np.testing.assert_allclose(up_direction(0, 0), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(up_direction(90, 0), [0, 0, -1], atol=1e-12)     # looking straight down
    np.testing.assert_allclose(up_direction(30, 0), [0, -math.cos(math.radians(30)), -0.5], atol=1e-12)


def test_fit_floor_finds_the_true_height(views) -> None:
    for depth, cam in views:
        fit = fit_floor(depth, cam, up_direction(PITCH, 0.0))
        assert fit is not None and fit.distance == pytest.approx(CAM_H, rel=0.01)
        assert fit.normal @ up_direction(PITCH, 0.0) > math.cos(math.radians(2))
        # scale-free: the same depth x 3 gives a plane 3 x as far with the same inliers
        fit3 = fit_floor(3.0 * depth, cam, up_direction(PITCH, 0.0))
        assert fit3.distance == pytest.approx(3 * fit.distance, rel=0.01)


@pytest.mark.parametrize("k", [0.7, 1.4])
def test_pipeline_recovers_the_metric_scale(views, models, k: float) -> None:
    """A backend whose depth is k x the truth: with the camera height, the output is the truth."""
    plain = DepthPipeline(make_backend("onnxruntime", models[k], num_threads=1))
    anchored = DepthPipeline(make_backend("onnxruntime", models[k], num_threads=1))
    settings = FrameSettings(anchor=AnchorSettings("floor", CAM_H))
    for i, (depth, cam) in enumerate(views):
        ok = depth > 0
        raw = plain.process(encode_depth(depth), cam, FrameSettings(), t=float(i)).depth
        assert np.median(raw[ok] / depth[ok]) == pytest.approx(k, rel=0.01)          # the model is off by k
        res = anchored.process(encode_depth(depth), cam, settings, t=float(i))
        assert res.anchor is not None and res.anchor.source == "floor"
        assert res.anchor.raw_scale == pytest.approx(1.0 / k, rel=0.02)
        err = np.abs(res.depth[ok] / depth[ok] - 1.0)
        assert np.median(err) < 0.02 and np.percentile(err, 90) < 0.03, (k, i, np.median(err))
        assert "anchor_ms" in res.timings_ms


def test_a_wall_filling_the_lower_view_is_not_a_floor(models) -> None:
    depth, cam = robot_view(5, H, W, CAM_H, wall=True)
    # it is a plane the fit would take if the normal were free: the normal constraint rejects it
    wall_normal = np.array([0.0, 0.0, -1.0])
    assert fit_floor(depth, cam, wall_normal, tolerance_deg=10) is not None
    assert fit_floor(depth, cam, up_direction(0.0, 0.0)) is None
    pipe = DepthPipeline(make_backend("onnxruntime", models[1.4], num_threads=1))
    res = pipe.process(encode_depth(depth), cam, FrameSettings(anchor=AnchorSettings("floor", CAM_H)))
    assert res.anchor.source == "model" and res.anchor.scale == 1.0
    ok = depth > 0
    assert np.median(res.depth[ok] / depth[ok]) == pytest.approx(1.4, rel=0.01)   # left at the model's scale


def test_holds_then_falls_back_when_the_floor_leaves_the_view(views, models) -> None:
    wall, wall_cam = robot_view(5, H, W, CAM_H, wall=True)
    pipe = DepthPipeline(make_backend("onnxruntime", models[0.7], num_threads=1))
    settings = FrameSettings(anchor=AnchorSettings("floor", CAM_H, hold_s=1.0))
    depth, cam = views[0]
    seen = []
    for t, (d, c) in ((0.0, (depth, cam)), (0.1, (depth, cam)), (0.5, (wall, wall_cam)), (0.9, (wall, wall_cam)),
                      (1.2, (wall, wall_cam)), (1.5, (depth, cam))):
        res = pipe.process(encode_depth(d), c, settings, t=t)
        seen.append((res.anchor.source, round(res.anchor.scale, 3)))
    s = round(1 / 0.7, 3)
    assert [x[0] for x in seen] == ["floor", "floor", "held", "held", "model", "floor"], seen
    assert seen[2][1] == pytest.approx(s, rel=0.02) and seen[4][1] == 1.0


def test_an_outlier_frame_cannot_yank_the_scale(views) -> None:
    depth, cam = views[1]
    anchor = FloorAnchor(AnchorSettings("floor", CAM_H))          # default window: the last 3
    scales = [anchor.update(depth, cam, float(t)).scale for t in range(6)]
    assert scales[-1] == pytest.approx(1.0, rel=0.01)
    # the network's scale moves a little from frame to frame and the floor follows it
    near = anchor.update(1.05 * depth, cam, 6.0)
    assert near.source == "floor" and near.scale == pytest.approx(1 / 1.05, rel=0.01)
    # one frame 1.3x off, within max_correction: the median of the last 3 is used instead
    odd = anchor.update(1.3 * depth, cam, 7.0)
    assert odd.raw_scale == pytest.approx(1 / 1.3, rel=0.02)
    assert odd.source == "floor" and odd.scale == pytest.approx(1 / 1.05, rel=0.01)
    # one frame 1.8x off, beyond max_correction (1.5): not a floor; the recent scale is held
    far = anchor.update(1.8 * depth, cam, 8.0)
    assert far.raw_scale == pytest.approx(1 / 1.8, rel=0.02)
    assert far.source == "held" and far.scale == pytest.approx(1 / 1.05, rel=0.01)
    assert anchor.update(depth, cam, 9.0).scale == pytest.approx(1.0, rel=0.01)
    anchor.update(depth, cam, 1.0)                       # time going back: a restarted source
    assert len(anchor._recent) == 1


def test_a_level_surface_asking_for_too_much_is_not_a_floor() -> None:
    """With no floor in view, a table top is the lowest level surface: at 0.85 m below a
    camera 1.6 m high it asks for 1.9x, beyond max_correction, so the network's scale stays;
    with max_correction 2.5 the same frame would be taken."""
    depth, cam = _table_view(floor=False)
    strict = FloorAnchor(AnchorSettings("floor", 1.6, pitch_deg=35.0, normal="expected"))
    state = strict.update(depth, cam, 0.0)
    assert state.raw_scale == pytest.approx(1.6 / 0.85, rel=0.02)
    assert state.source == "model" and state.scale == 1.0
    loose = FloorAnchor(AnchorSettings("floor", 1.6, pitch_deg=35.0, normal="expected", max_correction=2.5))
    assert loose.update(depth, cam, 0.0).source == "floor"


@pytest.mark.parametrize("kw,needle", [({"mode": "wall"}, "mode"), ({"mode": "floor"}, "camera_height"),
                                       ({"tolerance_deg": 90.0}, "tolerance"), ({"window": 0}, "window"),
                                       ({"normal": "sideways"}, "normal"),
                                       ({"max_correction": 1.0}, "max_correction")])
def test_bad_settings_are_refused(kw: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        AnchorSettings(**kw).check()


def test_infer_camera_height(tmp_path: Path, views, models) -> None:
    """`reflector infer --camera-height` does what the node's scale_anchor does, and logs the scale."""
    import cv2

    from reflector_ros.cli import main

    depth, cam = views[0]
    img = tmp_path / "frame.png"
    cv2.imwrite(str(img), cv2.cvtColor(encode_depth(depth), cv2.COLOR_RGB2BGR))   # lossless: the code survives
    flags = ["--fx", str(cam.fx), "--fy", str(cam.fy), "--cx", str(cam.cx), "--cy", str(cam.cy), "--npy",
             "--model", str(models[1.4]), "--backend", "onnxruntime"]
    assert main(["infer", str(img), "-o", str(tmp_path / "a"), "--camera-height", str(CAM_H), *flags]) == 0
    assert main(["infer", str(img), "-o", str(tmp_path / "b"), *flags]) == 0
    ok = depth > 0
    anchored, plain = np.load(tmp_path / "a" / "frame.npy"), np.load(tmp_path / "b" / "frame.npy")
    assert np.median(np.abs(anchored[ok] / depth[ok] - 1)) < 0.02
    assert np.median(plain[ok] / depth[ok]) == pytest.approx(1.4, rel=0.01)
    rows = (tmp_path / "a" / "scale_anchor.csv").read_text().splitlines()
    assert rows[0] == "frame,scale,source,floor_inliers" and rows[1].startswith("frame,0.71") and ",floor," in rows[1]


@pytest.mark.parametrize("flags,needle", [(["--camera-height", "-1"], "--camera-height"),
                                          (["--camera-height", "nan"], "--camera-height"),
                                          (["--camera-height", "0.4", "--camera-pitch", "95"], "--camera-pitch"),
                                          (["--camera-height", "0.4", "--anchor-window", "0"], "--anchor-window")])
def test_infer_refuses_bad_anchor_flags_by_their_names(tmp_path: Path, capsys, flags: list, needle: str) -> None:
    from reflector_ros.cli import main

    img = tmp_path / "frame.png"
    import cv2

    cv2.imwrite(str(img), np.zeros((48, 64, 3), np.uint8))
    assert main(["infer", str(img), "-o", str(tmp_path / "o"), "--fx", "60", *flags]) == 2
    err = capsys.readouterr().err
    assert needle in err and "scale_anchor." not in err and "Traceback" not in err, err


def test_infer_says_what_the_anchor_did(tmp_path: Path, capsys, views, models) -> None:
    import cv2

    from reflector_ros.cli import main

    depth, cam = views[0]
    img = tmp_path / "frame.png"
    cv2.imwrite(str(img), cv2.cvtColor(encode_depth(depth), cv2.COLOR_RGB2BGR))
    flags = ["--fx", str(cam.fx), "--fy", str(cam.fy), "--cx", str(cam.cx), "--cy", str(cam.cy),
             "--model", str(models[1.4]), "--backend", "onnxruntime"]
    assert main(["infer", str(img), "-o", str(tmp_path / "a"), "--camera-height", str(CAM_H), *flags]) == 0
    assert "scale anchor: floor in 1 of 1 frames" in capsys.readouterr().err
    assert main(["infer", str(img), "-o", str(tmp_path / "b"), "--anchor-normal", "expected", *flags]) == 0
    assert "ignored without --camera-height: --anchor-normal" in capsys.readouterr().err
    assert not (tmp_path / "b" / "scale_anchor.csv").exists()


@pytest.mark.timeout(180)
def test_node_anchors_over_dds_then_holds_and_falls_back(tmp_path: Path, views, models) -> None:
    """The node with scale_anchor.mode floor, over real DDS, on a model 1.4x off: depth/image is
    the truth within 2 %; with the floor gone /diagnostics says held, then model."""
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import CameraInfo, Image

    from ros_helpers import (Harness, diagnostics_values, image_array, make_camera_info, make_image_msg, read_log,
                             start_node, stop_node)

    ns = "/anchor_test"
    proc = start_node({"backend": "onnxruntime", "model": str(models[1.4]), "num_threads": 1,
                       "diagnostics_period": 0.2, "scale_anchor.mode": "floor", "scale_anchor.camera_height": CAM_H,
                       "scale_anchor.pitch_deg": PITCH, "scale_anchor.tolerance_deg": 15.0,
                       "scale_anchor.hold_s": 1.0}, remaps={"__ns": ns})
    h = Harness("anchor_test_harness")
    try:
        h.subscribe_diagnostics()
        h.subscribe(f"{ns}/depth/image", Image)
        h.publisher(f"{ns}/image", Image, "best_effort", 5)
        h.publisher(f"{ns}/camera_info", CameraInfo, "reliable", 5)
        assert h.wait_matched(f"{ns}/image", 1, 60), read_log(proc)
        (depth, cam), (wall, wall_cam) = views[0], robot_view(5, H, W, CAM_H, wall=True)
        t0 = 1000.0

        def send(d: np.ndarray, c, t: float) -> None:
            info = make_camera_info(W, H, c.fx, c.fy, c.cx, c.cy, stamp=t)
            h.publish(f"{ns}/camera_info", info)
            h.publish(f"{ns}/image", make_image_msg(encode_depth(d), "rgb8", t))

        def answer(t: float):
            for m in list(h.received[f"{ns}/depth/image"]):
                if abs(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 - t) < 1e-6:
                    return m
            return None

        def diag() -> dict:
            for msg in reversed(h.received["/diagnostics"]):
                vals = diagnostics_values(msg, hardware_id=f"{ns}/reflector_depth")
                if vals is not None:
                    return vals
            return {}

        got = None
        for i in range(60):                      # until discovery is done and the node answers
            send(depth, cam, t0 + 0.05 * i)
            if h.wait_for(lambda: answer(t0 + 0.05 * i) is not None, 0.5):
                got = answer(t0 + 0.05 * i)
                break
        assert got is not None, read_log(proc)
        ok = depth > 0
        out = image_array(got)
        assert np.median(np.abs(out[ok] / depth[ok] - 1)) < 0.02
        assert h.wait_for(lambda: diag().get("scale_source") == "floor", 5), diag()
        assert float(diag()["scale"]) == pytest.approx(1 / 1.4, rel=0.02)
        t = t0 + 0.05 * i                        # the last frame with the floor in view
        for dt, state in ((0.3, "held"), (1.8, "model")):      # hold_s is 1.0
            for k in range(20):                  # the input is best effort: send until one is processed
                send(wall, wall_cam, t + dt + 0.01 * k)
                if h.wait_for(lambda: diag().get("scale_source") == state, 0.5):
                    break
            assert diag().get("scale_source") == state, (state, diag())
            want = 1.0 if state == "model" else 1 / 1.4
            assert float(diag()["scale"]) == pytest.approx(want, rel=0.02)
        assert "using the network's own scale" in read_log(proc)
    finally:
        h.close()
        log = stop_node(proc)
    assert "Traceback" not in log, log


def _table_view(floor: bool = True):
    """A head-height camera (1.6 m) looking down 35 degrees at a table (0.75 m high) that
    fills more of the lower view than the floor; ``floor=False``: the table alone."""
    from reflector_ros.core.camera import Intrinsics

    h, w, height, pitch = 120, 160, 1.6, 35.0
    cam = Intrinsics(120.0, 120.0, 79.5, 59.5, w, h)
    down = -up_direction(pitch, 0.0)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=-1)
    along = rays @ down                                           # > 0: the ray goes down
    table = np.where(along > 1e-6, (height - 0.75) / np.maximum(along, 1e-6), 0.0)
    depth = np.where(along > 1e-6, height / np.maximum(along, 1e-6), 0.0) if floor else np.zeros_like(table)
    depth[30:, 15:145] = table[30:, 15:145]                      # the table covers most of the view
    return np.where(depth < 8.0, depth, 0.0).astype(np.float32), cam


@pytest.mark.parametrize("normal", ["fitted", "expected"])
def test_a_table_top_in_view_is_not_taken_for_the_floor(normal: str) -> None:
    """Both are level surfaces, and the floor is the lower one."""
    depth, cam = _table_view()
    fit = fit_floor(depth, cam, up_direction(35.0, 0.0), tolerance_deg=10.0, normal=normal)
    assert fit is not None and fit.distance == pytest.approx(1.6, rel=0.01)
    fit = fit_floor(_table_view(floor=False)[0], cam, up_direction(35.0, 0.0), tolerance_deg=10.0, normal=normal)
    assert fit is not None and fit.distance == pytest.approx(0.85, rel=0.01)   # with no floor, the table is all there is


def test_a_floor_tilted_by_the_network_keeps_its_height_along_the_expected_up() -> None:
    """Learned depth gets a floor's height (where it is) better than its tilt. A depth map whose
    floor is tilted 6 degrees about a floor point in the lower middle of the view: measured
    along the expected up (the camera's known attitude), the distance is within 4 % of the
    height (2 % here); along the tilted plane's fitted normal it is 19 % off. Both scale-free."""
    from reflector_ros.core.camera import Intrinsics

    h, w, height, pitch = 120, 160, 0.5, 15.0
    cam = Intrinsics(110.0, 110.0, 79.5, 59.5, w, h)
    up = up_direction(pitch, 0.0)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=-1)
    # the true floor point seen at the middle of the lower view, and a plane through it tilted
    # by 6 degrees about the camera's x axis
    ray0 = rays[int(0.7 * h), w // 2]
    p0 = ray0 * height / float(ray0 @ -up)
    a = math.radians(6.0)
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    n = rot @ up
    along = rays @ -n
    depth = np.where(along > 1e-6, float(p0 @ -n) / np.maximum(along, 1e-6), 0.0)
    depth = np.where((depth > 0) & (depth < 8.0), depth, 0.0).astype(np.float32)
    for k in (1.0, 2.0):
        expected = fit_floor(k * depth, cam, up, tolerance_deg=15.0, normal="expected")
        fitted = fit_floor(k * depth, cam, up, tolerance_deg=15.0, normal="fitted")
        assert expected is not None and fitted is not None
        assert expected.distance == pytest.approx(k * height, rel=0.04)
        assert abs(fitted.distance / (k * height) - 1) > 0.1          # the tilted plane's own distance
    with pytest.raises(InputError, match="normal"):
        fit_floor(depth, cam, up, normal="sideways")


@pytest.mark.parametrize("pitch,roll", [(0.0, 0.0), (45.0, 0.0), (80.0, 0.0), (-10.0, 180.0), (10.0, 90.0),
                                        (20.0, -150.0)])
@pytest.mark.parametrize("normal", ["fitted", "expected"])
def test_any_mount_attitude_finds_the_floor(pitch: float, roll: float, normal: str) -> None:
    """Level, steep, nearly straight down, upside down, portrait: with the mount's pitch and
    roll given, the floor below the horizon is found at the camera's height."""
    from reflector_ros.core.camera import Intrinsics

    h, w, height = 90, 120, 0.8
    cam = Intrinsics(90.0, 90.0, 59.5, 44.5, w, h)
    up = up_direction(pitch, roll)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=-1)
    along = rays @ -up
    depth = np.where(along > 1e-6, height / np.maximum(along, 1e-6), 0.0)
    depth = np.where(depth < 10.0, depth, 0.0).astype(np.float32)
    assert (depth > 0).mean() > 0.1
    fit = fit_floor(depth, cam, up, tolerance_deg=10.0, normal=normal)
    assert fit is not None and fit.distance == pytest.approx(height, rel=0.01), (pitch, roll)


def test_bad_heights_and_directions_are_refused(views) -> None:
    depth, cam = views[0]
    anchor = FloorAnchor(AnchorSettings("floor", CAM_H))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="camera_height"):
            anchor.update(depth, cam, 0.0, camera_height=bad)
    with pytest.raises(InputError, match="camera_height"):
        FloorAnchor(AnchorSettings()).update(depth, cam, 0.0)           # mode none has no height
    with pytest.raises(InputError, match="up"):
        fit_floor(depth, cam, np.zeros(3))
    with pytest.raises(InputError, match="window"):
        AnchorSettings(window=2.5).check()                               # type: ignore[arg-type]
