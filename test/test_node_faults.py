"""Faults users hit with the real node: params files under a namespace, SIGINT/SIGTERM, 16-bit
compressed frames, 14-coefficient lenses, and the Fast DDS line in the log.

Each test runs `reflector node` in a subprocess over real DDS (the embedded default model on
ONNX Runtime, as a user starts it) and talks to it from one in-process harness node.
"""
from __future__ import annotations

import itertools
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")

from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.parameter import parameter_value_to_python  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402

from ros_helpers import (wait_diagnostics, REPO, Harness, cloud_xyz, image_array, make_camera_info,  # noqa: E402
                         make_compressed_msg, make_image_msg, node_env, read_log, stop_all, stop_node, test_rgb, to_time)

W, H, FX = 160, 120, 150.0
RGB = test_rgb(H, W)
_NS = itertools.count()
BASE = ["-p", "backend:=onnxruntime", "-p", "num_threads:=1", "-p", "diagnostics_period:=0.25"]

pytestmark = pytest.mark.timeout(180)


def start(args: list[str], ns: str | None = None, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """`reflector node --ros-args <args>` in its own namespace; output in `proc.log_path`."""
    ns = ns or f"/reflector_faults_{os.getpid()}_{next(_NS)}"
    fd, log_path = tempfile.mkstemp(prefix="reflector_node_", suffix=".log")
    cmd = [sys.executable, "-m", "reflector_ros.cli", "node", "--ros-args", "-r", f"__ns:={ns}", *BASE, *args]
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=node_env(env_extra), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path  # type: ignore[attr-defined]
    proc.ns = ns  # type: ignore[attr-defined]
    return proc


@pytest.fixture
def nodes():
    """Every node started through it is stopped at teardown and must not have crashed."""
    procs: list[subprocess.Popen] = []
    yield procs
    stop_all(procs)


def get_parameters(h: Harness, node_fqn: str, names: list[str], timeout: float = 30.0) -> dict[str, Any]:
    """The node's values through the standard `<node>/get_parameters` service."""
    client = h.node.create_client(GetParameters, f"{node_fqn}/get_parameters")
    try:
        assert h.wait_for(client.service_is_ready, timeout), f"{node_fqn}/get_parameters not available"
        future = client.call_async(GetParameters.Request(names=names))
        assert h.wait_for(future.done, timeout), f"{node_fqn}/get_parameters did not answer"
        return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}
    finally:
        h.node.destroy_client(client)


class Cam:
    """The test's camera in one node's namespace; collects that node's outputs."""

    def __init__(self, h: Harness, ns: str, compressed: bool = False, outputs: tuple[str, ...] = ("depth/image",)):
        self.h, self.ns = h, ns
        self.image_topic = f"{ns}/image/compressed" if compressed else f"{ns}/image"
        types = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/confidence": Image,
                 "depth/colored": Image, "points": PointCloud2}
        for topic in outputs:
            h.subscribe(f"{ns}/{topic}", types[topic])
        h.publisher(self.image_topic, CompressedImage if compressed else Image, "best_effort", 5)
        h.publisher(f"{ns}/camera_info", CameraInfo, "reliable", 5)
        assert h.wait_matched(self.image_topic, 1, 60), "node never subscribed (did it start?)"
        self.last = time.time()

    def stamp(self) -> Any:
        self.last = max(time.time(), self.last + 1e-3)
        return to_time(self.last)

    def send(self, msg: Any = None, info: Any = None) -> Any:
        msg = msg if msg is not None else make_image_msg(RGB, "rgb8", self.stamp())
        info = info if info is not None else make_camera_info(W, H, FX)
        info.header.stamp = msg.header.stamp
        self.h.publish(f"{self.ns}/camera_info", info)
        self.h.publish(self.image_topic, msg)
        return msg.header.stamp

    def answered(self, stamp: Any, topic: str = "depth/image") -> Any | None:
        return next((m for m in list(self.h.received[f"{self.ns}/{topic}"]) if m.header.stamp == stamp), None)

    def prime(self, topic: str = "depth/image", timeout: float = 60.0, **kw: Any) -> Any:
        """Frames until one is answered on `topic` (discovery of our subscribers is done)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            stamp = self.send(**kw)
            if self.h.wait_for(lambda: self.answered(stamp, topic) is not None, 0.5):
                return stamp
        raise AssertionError(f"node never answered on {topic}")

    def diagnostics(self, pred, timeout: float = 10.0) -> dict:
        return wait_diagnostics(self.h, self.ns, pred, timeout)


# ----------------------------------------------------------------------------- params file under a namespace

def _params_file(tmp_path: Path, top_key: str | None = None) -> Path:
    """The shipped config/depth.yaml with points_stride 4 and max_depth 7.5 (its own top key
    unless `top_key` replaces it)."""
    text = (REPO / "config" / "depth.yaml").read_text()
    text, n1 = re.subn(r"(?m)^(\s+points_stride:) 1\b", r"\1 4", text)
    text, n2 = re.subn(r"(?m)^(\s+max_depth:) 10\.0\b", r"\1 7.5", text)
    assert n1 == n2 == 1, "config/depth.yaml no longer lists points_stride: 1 and max_depth: 10.0"
    if top_key is not None:
        text = re.sub(r"(?m)^\S.*:\s*$", f"{top_key}:", text, count=1)
    path = tmp_path / f"params_{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(text)
    return path


def test_shipped_params_key_matches_any_namespace() -> None:
    import yaml

    assert list(yaml.safe_load((REPO / "config" / "depth.yaml").read_text())) == ["/**/reflector_depth"]


def test_params_file_applies_under_a_namespace(harness: Harness, nodes: list, tmp_path: Path) -> None:
    """`reflector node --ros-args -r __ns:=/robot1 --params-file depth.yaml`: the shipped key applies
    there; the old `reflector_depth:` key, started beside it, is ignored by ROS (the fault)."""
    ns = f"/robot1_{os.getpid()}"
    shipped = start(["--params-file", str(_params_file(tmp_path))], ns=ns)
    old_key = start(["--params-file", str(_params_file(tmp_path, "reflector_depth"))], ns=ns + "_old")
    nodes += [shipped, old_key]
    names = ["points_stride", "max_depth", "min_depth"]
    assert get_parameters(harness, f"{ns}/reflector_depth", names) == {"points_stride": 4, "max_depth": 7.5,
                                                                       "min_depth": 0.2}
    assert get_parameters(harness, f"{ns}_old/reflector_depth", names)["points_stride"] == 1

    # and in the outputs: a cloud of every 4th pixel, no depth beyond 7.5 m
    cam = Cam(harness, ns, outputs=("depth/image", "points"))
    stamp = cam.prime("points")
    assert harness.wait_for(lambda: cam.answered(stamp) is not None, 10)
    cloud = cam.answered(stamp, "points")
    assert (cloud.width, cloud.height) == (W // 4, H // 4)
    depth = image_array(cam.answered(stamp))
    assert np.isfinite(depth).any() and np.nanmax(depth) <= 7.5
    xyz = cloud_xyz(cloud)
    assert np.nanmax(xyz[..., 2]) <= 7.5


# ----------------------------------------------------------------------------- signals

def _loading_rclpy(pid: int) -> bool:
    """Whether the process has begun loading rclpy's C extension (Linux /proc maps)."""
    try:
        return "_rclpy_pybind11" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _signalled(entry: list[str], when: str, signals: list[tuple[float, signal.Signals]]) -> tuple[int | None, float, str]:
    """Start the node through ``entry``; once it is ``when`` ("loading": rclpy's C extension
    is loading; "running": warmed up), send each (delay, signal) in turn. (exit code or
    None after 10 s, seconds from the first signal to the exit, the node's log)."""
    fd, log_path = tempfile.mkstemp(prefix="reflector_node_", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen([sys.executable, *entry, "--ros-args", *BASE], cwd=str(REPO), env=node_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ready = (lambda: _loading_rclpy(proc.pid)) if when == "loading" else \
        (lambda: "warm-up" in Path(log_path).read_text(errors="replace"))
    try:
        end = time.monotonic() + 60
        while not ready() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.001)
        assert proc.poll() is None, Path(log_path).read_text()
        t0 = time.monotonic()
        for delay, sig in signals:
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(sig)
        try:
            code: int | None = proc.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, took, Path(log_path).read_text(errors="replace")


ENTRIES = pytest.mark.parametrize("entry", [["-m", "reflector_ros.ros.main"], ["-m", "reflector_ros.cli", "node"]],
                                  ids=["depth_node", "reflector_node"])
PROC_MAPS = pytest.mark.skipif(not Path("/proc/self/maps").is_file(),
                               reason="reads the loaded libraries from Linux's /proc/<pid>/maps")


@PROC_MAPS
@ENTRIES
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_start_up_ends_the_node_cleanly(entry: list[str], sig: signal.Signals) -> None:
    """A signal while Python is still importing the node (sent as rclpy's C extension loads;
    numpy, OpenCV and the backend come after it): exit 0, no traceback, within 2 s. `ros2 launch`
    may stop a node that early; `ros2 run`'s script and `reflector node` both get here. Before,
    SIGINT there gave a KeyboardInterrupt traceback and SIGTERM killed the process (exit -15)."""
    code, took, text = _signalled(entry, "loading", [(0.0, sig)])
    assert code == 0, f"exit {code} after {sig.name}:\n{text}"
    assert "Traceback" not in text, text
    assert took < 2.0, f"{sig.name} during start-up took {took:.2f} s to end the node"


@PROC_MAPS
@ENTRIES
@pytest.mark.parametrize("when, second", [("loading", signal.SIGINT), ("loading", signal.SIGTERM),
                                          ("running", signal.SIGINT), ("running", signal.SIGTERM)])
def test_a_second_signal_on_the_way_out_is_ignored(entry: list[str], when: str, second: signal.Signals) -> None:
    """Ctrl-C twice, or ros2 launch's SIGTERM after its SIGINT: SIGINT, then the second signal
    50 ms later, while the node loads or once it runs. Exit 0, no traceback. Before, the
    second one often killed the process (-2, -15) as the interpreter exited, having put the
    default handlers back."""
    code, _, text = _signalled(entry, when, [(0.0, signal.SIGINT), (0.05, second)])
    assert code == 0, f"exit {code} after SIGINT, then {second.name}:\n{text}"
    assert "Traceback" not in text, text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_the_node_cleanly_mid_inference(harness: Harness, sig: signal.Signals) -> None:
    """ros2 launch sends SIGINT, then SIGTERM 5 s later: either ends the node with exit 0, no
    traceback and within 2 s, also while a frame is being processed. Frames come faster than the
    node answers them, so a frame is always in flight; the signal goes 20 ms after an answer,
    when the next frame has just started."""
    proc = start([])
    try:
        cam = Cam(harness, proc.ns, outputs=("depth/image", "points"))   # type: ignore[attr-defined]
        rgb = test_rgb(480, 640)
        cam.prime("points")
        info = make_camera_info(640, 480, 500.0)
        answered = len(harness.received[f"{proc.ns}/depth/image"])  # type: ignore[attr-defined]
        end = time.monotonic() + 20
        while time.monotonic() < end:
            cam.send(make_image_msg(rgb, "rgb8", cam.stamp()), info=info)
            harness.spin(0.02)
            if len(harness.received[f"{proc.ns}/depth/image"]) >= answered + 3:  # type: ignore[attr-defined]
                break
        n = len(harness.received[f"{proc.ns}/depth/image"])  # type: ignore[attr-defined]
        assert n >= answered + 3, "the node did not answer VGA frames:\n" + read_log(proc)
        cam.send(make_image_msg(rgb, "rgb8", cam.stamp()), info=info)   # one more in the mailbox
        assert harness.wait_for(lambda: len(harness.received[f"{proc.ns}/depth/image"]) > n, 10)  # type: ignore[attr-defined]
        cam.send(make_image_msg(rgb, "rgb8", cam.stamp()), info=info)
        harness.spin(0.02)
        t0 = time.monotonic()
        proc.send_signal(sig)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - t0
        log = read_log(proc)
        print(f"\n{sig.name}: exit {code} after {took:.2f} s")
        assert code == 0, f"exit {code} after {sig.name}:\n{log}"
        assert "Traceback" not in log, log
        assert f"{sig.name}: shutting down" in log, log
        assert took < 2.0, f"{sig.name} took {took:.2f} s to end the node"
    finally:
        stop_node(proc)


# ----------------------------------------------------------------------------- 16-bit compressed frames

def _png16(arr: np.ndarray) -> bytes:
    """A 16-bit grey PNG written by hand (zlib + struct)."""
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16bit_compressed_frames_are_refused_with_one_warning(harness: Harness, nodes: list) -> None:
    """mono16 in a 16-bit PNG (12-bit values) used to become a near-black 8-bit frame with depth and
    a cloud published from it. Now: no output, and one throttled warning naming the problem."""
    proc = start(["-p", "compressed_input:=true"])
    nodes.append(proc)
    cam = Cam(harness, proc.ns, compressed=True, outputs=("depth/image", "points"))  # type: ignore[attr-defined]
    good = lambda: make_compressed_msg(RGB, "png", cam.stamp())  # noqa: E731
    end = time.monotonic() + 60
    while time.monotonic() < end:   # the node answers 8-bit PNGs: discovery is done
        stamp = cam.send(good())
        if harness.wait_for(lambda: cam.answered(stamp) is not None, 0.5):
            break
    assert cam.answered(stamp) is not None, read_log(proc)

    twelve_bit = np.random.default_rng(3).integers(0, 4096, (H, W), dtype=np.uint16)
    payload = _png16(twelve_bit)
    bad = []
    for _ in range(12):
        msg = make_compressed_msg(RGB, "png", cam.stamp(), payload=payload)
        msg.format = "mono16; png compressed mono16"
        bad.append(cam.send(msg))
        harness.spin(0.1)
    needle = "16-bit grey (uint16, 1 channel) pixels is a 16/32-bit or depth encoding, not camera colour input"
    assert harness.wait_log(proc, needle), read_log(proc)
    cam.diagnostics(lambda d: int(d["skipped_bad_frames"]) >= 12)
    assert not any(cam.answered(s) or cam.answered(s, "points") for s in bad)
    assert read_log(proc).count(needle) == 1, read_log(proc)   # 12 frames in ~1.5 s: one line
    after = cam.send(good())
    assert harness.wait_for(lambda: cam.answered(after) is not None, 10), "8-bit frames not answered afterwards"


def test_compressed_bayer_frames_are_demosaiced(harness: Harness, nodes: list) -> None:
    """A raw mosaic sent through compressed_image_transport ('bayer_rggb8; png compressed ') used to
    reach the network as the grey mosaic. Now its depth is that of the colour frame it was sampled
    from, up to demosaicing, and far from the grey mosaic's."""
    import cv2

    proc = start(["-p", "compressed_input:=true"])
    nodes.append(proc)
    cam = Cam(harness, proc.ns, compressed=True)
    mosaic = np.empty((H, W), np.uint8)
    for k, c in enumerate("rggb"):
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = RGB[dy::2, dx::2, "rgb".index(c)]
    ok, png = cv2.imencode(".png", mosaic)
    assert ok

    def depth_of(fmt: str, payload: bytes | None) -> np.ndarray:
        end = time.monotonic() + 60
        while time.monotonic() < end:   # the first frames may go out before discovery is done
            stamp = cam.send(make_compressed_msg(RGB, fmt, cam.stamp(), payload=payload))
            if harness.wait_for(lambda: cam.answered(stamp) is not None, 1.0):
                m = cam.answered(stamp)
                return np.frombuffer(bytes(m.data), np.float32).reshape(m.height, m.width)
        raise AssertionError(read_log(proc))

    colour = depth_of("png", None)
    bayer = depth_of("bayer_rggb8; png compressed ", png.tobytes())
    grey = depth_of("mono8; png compressed ", png.tobytes())
    to_colour = float(np.nanmean(np.abs(bayer - colour)))
    grey_off = float(np.nanmean(np.abs(grey - colour)))
    assert to_colour < 0.5 * grey_off, (to_colour, grey_off)


# ----------------------------------------------------------------------------- 14-coefficient lens

def test_14_coefficient_camera_info_is_rectified(harness: Harness, nodes: list) -> None:
    """rational_polynomial with 14 coefficients (OAK cameras): undistorted into P, as OpenCV reads
    all 14; depth/camera_info is P's camera and /diagnostics says rectify is on."""
    import cv2

    proc = start([])
    nodes.append(proc)
    cam = Cam(harness, proc.ns, outputs=("depth/image", "depth/camera_info", "points"))  # type: ignore[attr-defined]
    cam.prime("points")
    info = make_camera_info(W, H, FX)
    info.distortion_model = "rational_polynomial"
    info.d = [-0.25, 0.08, 0.001, -0.0012, -0.01, 0.30, -0.02, 0.005, 0.002, -0.0005, 0.0015, 0.0003, 0.01, -0.008]
    pfx, pcx, pcy = 0.85 * FX, W / 2 + 1.5, H / 2 - 2.0
    info.p = [pfx, 0.0, pcx, 0.0, 0.0, pfx, pcy, 0.0, 0.0, 0.0, 1.0, 0.0]
    k, d, p3 = np.asarray(info.k).reshape(3, 3), np.asarray(info.d), np.asarray(info.p).reshape(3, 4)[:, :3]
    mx, my = cv2.initUndistortRectifyMap(k, d, None, p3, (W, H), cv2.CV_32FC1)
    expected = cv2.remap(RGB, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mx8, my8 = cv2.initUndistortRectifyMap(k, d[:8], None, p3, (W, H), cv2.CV_32FC1)
    first8 = cv2.remap(RGB, mx8, my8, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    stamp = None
    for _ in range(20):
        stamp = cam.send(info=info)
        if harness.wait_for(lambda: cam.answered(stamp, "points") and cam.answered(stamp, "depth/camera_info"), 1.0):
            break
    out = cam.answered(stamp, "depth/camera_info")
    assert out is not None, read_log(proc)
    assert list(out.k) == pytest.approx([pfx, 0, pcx, 0, pfx, pcy, 0, 0, 1]) and not any(out.d)
    assert list(out.p)[:3] == pytest.approx([pfx, 0, pcx])
    cloud = cam.answered(stamp, "points")
    off = {f.name: f.offset for f in cloud.fields}["rgb"]
    rgb = np.frombuffer(bytes(cloud.data), np.uint8).reshape(H, W, cloud.point_step)[..., off:off + 3][..., ::-1]
    seen = (mx >= 1) & (mx <= W - 2) & (my >= 1) & (my <= H - 2)
    err = np.abs(rgb.astype(int) - expected.astype(int))[seen]
    assert err.mean() < 1.0, err.mean()                                         # 1/32-pixel maps vs float maps
    assert np.abs(rgb.astype(int) - RGB.astype(int))[seen].mean() > 10 * err.mean()       # it did move pixels
    assert np.abs(rgb.astype(int) - first8.astype(int))[seen].mean() > 2 * err.mean()     # with all 14 of them
    diag = cam.diagnostics(lambda v: v.get("rectify", "").startswith("on"))
    assert "taken as raw" in diag["rectify"]
    assert "coefficients" not in read_log(proc)


# ----------------------------------------------------------------------------- Fast DDS line

def _fastdds_line(log: str) -> str:
    lines = [ln for ln in log.splitlines() if "Fast DDS:" in ln or "rmw " in ln and "profile" in ln]
    assert len(lines) == 1, log
    return lines[0]


def test_log_says_which_fast_dds_profile_is_in_effect(harness: Harness, nodes: list, tmp_path: Path) -> None:
    """Ours applied by the node, ours already named (as depth.launch.py does), the user's own, another rmw."""
    from reflector_ros.ros.fastdds import PROFILE_VARS, SET_BY_VAR, profile_path

    own = tmp_path / "my_profile.xml"
    own.write_text('<?xml version="1.0"?><dds xmlns="http://www.eprosima.com"><profiles/></dds>')
    clear = {v: "" for v in PROFILE_VARS}
    cases = {
        "node": ({**clear, SET_BY_VAR: ""}, f"using the large-message SHM profile {profile_path()}, set by the node"),
        "launch": ({**clear, PROFILE_VARS[0]: str(profile_path()), SET_BY_VAR: "depth.launch.py"},
                   "set by depth.launch.py"),
        "user": ({**clear, PROFILE_VARS[0]: str(own)}, f"using your profile {own}"),
    }
    procs = {name: start([], env_extra=env) for name, (env, _) in cases.items()}
    nodes.extend(procs.values())
    for name, (_, needle) in cases.items():
        assert harness.wait_log(procs[name], "Fast DDS:", 60), read_log(procs[name])
        assert needle in _fastdds_line(read_log(procs[name])), (name, read_log(procs[name]))
    assert "[WARN]" not in _fastdds_line(read_log(procs["node"]))
