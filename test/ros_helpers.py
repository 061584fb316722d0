"""Shared ROS 2 test utilities: the node in a subprocess, an in-process harness, message builders.

Real rclpy and real DDS only. The node runs in its own process (as in deployment) so a
crash, a non-zero exit or a traceback shows up in its log; the test side is one small
rclpy node that publishes camera frames and collects every output per topic.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent

_BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2,
        "16UC1": 2, "32FC1": 4, "8UC1": 1, "8UC3": 3, "bayer_rggb8": 1}


def node_env(env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's ROS environment (domain id, loopback discovery) for a child."""
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_LOCALHOST_ONLY", "1")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
    return env


def param_arg(value: Any) -> str:
    """A value as `-p name:=VALUE` text that ROS's YAML parser reads back with the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    try:
        same = yaml.safe_load(text) == text
    except yaml.YAMLError:
        same = False
    return text if text and same else "'" + text.replace("'", "''") + "'"


def node_command(params: dict[str, Any], remaps: dict[str, str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "reflector_ros.cli", "node", "--ros-args"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={param_arg(value)}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def start_node(params: dict[str, Any], remaps: dict[str, str] | None = None,
               env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """`reflector node --ros-args -p k:=v -r from:=to` in a subprocess; output goes to `proc.log_path`."""
    fd, log_path = tempfile.mkstemp(prefix="reflector_node_", suffix=".log")
    log = os.fdopen(fd, "wb")
    proc = subprocess.Popen(node_command(params, remaps), cwd=str(REPO), env=node_env(env_extra),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def read_log(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def stop_node(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """SIGINT (as Ctrl-C), then SIGKILL if it hangs; returns everything the node wrote."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    text = read_log(proc)
    try:
        os.unlink(proc.log_path)  # type: ignore[attr-defined]
    except OSError:
        pass
    return text


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Stop every node; each must still have been running, and none may have logged a traceback."""
    for proc in procs:
        alive = proc.poll() is None
        log = stop_node(proc)
        assert alive, f"the node died during the test:\n{log}"
        assert "Traceback" not in log, log


def wait_exit(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int | None, str]:
    """For start-up refusals: the exit code (None if still running) and the log."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None, read_log(proc)
    return proc.returncode, read_log(proc)


# ----------------------------------------------------------------------------- messages

def to_time(stamp: float | tuple[int, int] | Any):
    """float seconds, (sec, nanosec) or a builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    if isinstance(stamp, Time):
        return stamp
    if isinstance(stamp, tuple):
        return Time(sec=int(stamp[0]), nanosec=int(stamp[1]))
    ns = int(round(float(stamp) * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def make_image_msg(rgb: np.ndarray, encoding: str = "rgb8", stamp: Any = 1.0,
                   frame_id: str = "camera_optical_frame", step_pad: int = 0,
                   big_endian: bool = False):
    """A sensor_msgs/Image from an (H, W, 3) uint8 RGB array, converted to `encoding`.

    `step_pad` adds bytes at the end of every row (as some drivers do). For shapes or
    encodings that need no conversion, pass the raw array (H, W[, C]) of the right dtype.
    """
    import cv2
    from sensor_msgs.msg import Image

    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        conv = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
                "mono8": cv2.COLOR_RGB2GRAY}
        if encoding in conv:
            arr = cv2.cvtColor(arr, conv[encoding])
        elif encoding in ("mono16", "16UC1"):
            arr = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    if big_endian and arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8)
    if step_pad:
        row = np.concatenate([row, np.zeros((h, step_pad), np.uint8)], axis=1)
    msg = Image()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = h, w
    msg.encoding = encoding
    msg.is_bigendian = 1 if big_endian else 0
    msg.step = row.shape[1]
    msg.data.frombytes(np.ascontiguousarray(row).tobytes())
    return msg


def make_compressed_msg(rgb: np.ndarray, fmt: str = "jpeg", stamp: Any = 1.0,
                        frame_id: str = "camera_optical_frame", payload: bytes | None = None):
    """A sensor_msgs/CompressedImage (jpeg or png) from RGB; `payload` overrides the bytes."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.format = fmt
    if payload is None:
        ok, buf = cv2.imencode(".jpg" if fmt.startswith("jpeg") else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        payload = buf.tobytes()
    msg.data = payload
    return msg


def make_camera_info(width: int, height: int, fx: float, fy: float | None = None,
                     cx: float | None = None, cy: float | None = None, stamp: Any = 1.0,
                     frame_id: str = "camera_optical_frame", k: list[float] | None = None):
    """A pinhole sensor_msgs/CameraInfo (plumb_bob, zero distortion), K and P filled."""
    from sensor_msgs.msg import CameraInfo

    fy = fx if fy is None else fy
    cx = (width - 1) / 2.0 if cx is None else cx
    cy = (height - 1) / 2.0 if cy is None else cy
    msg = CameraInfo()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = width, height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(v) for v in (k if k is not None else [fx, 0, cx, 0, fy, cy, 0, 0, 1])]
    msg.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    kk = msg.k
    msg.p = [kk[0], 0.0, kk[2], 0.0, 0.0, kk[4], kk[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def test_rgb(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """A textured RGB frame (gradients plus noise) so the network sees structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1),
                    (xx + yy) * 127 // max(width + height - 2, 1)], axis=-1).astype(np.int32)
    img += rng.integers(-20, 20, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


test_rgb.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def image_array(msg) -> np.ndarray:
    """Zero-copy-ish numpy view of an output Image (32FC1, 16UC1, bgr8) honouring step."""
    dtype = {"32FC1": np.float32, "16UC1": np.uint16, "bgr8": np.uint8, "rgb8": np.uint8, "mono8": np.uint8}[msg.encoding]
    ch = 3 if msg.encoding in ("bgr8", "rgb8") else 1
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    row_bytes = msg.width * ch * dt.itemsize
    arr = raw[:, :row_bytes].copy().view(dt).reshape(msg.height, msg.width, ch)
    return arr[..., 0] if ch == 1 else arr


def cloud_xyz(msg) -> np.ndarray:
    """(h, w, 3) float32 xyz of an organized PointCloud2, from its field offsets."""
    offs = {f.name: f.offset for f in msg.fields}
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.row_step)
    raw = raw[:, :msg.width * msg.point_step].reshape(msg.height, msg.width, msg.point_step)
    out = np.empty((msg.height, msg.width, 3), np.float32)
    for i, name in enumerate("xyz"):
        out[..., i] = raw[..., offs[name]:offs[name] + 4].copy().view("<f4")[..., 0]
    return out


def diagnostics_values(msg, hardware_id: str | None = None) -> dict[str, str] | None:
    """Key-values of a depth node's status in a DiagnosticArray (None if absent); level under
    '_level', message under '_message'.

    `hardware_id` (the depth node's fully qualified name) picks one node among several; its
    status is named after it ("/front/reflector_depth" -> "front/reflector_depth: pipeline").
    """
    for status in msg.status:
        if hardware_id is None:
            ours = status.name.endswith("reflector_depth: pipeline")
        else:
            ours = status.hardware_id == hardware_id and status.name == f"{hardware_id.lstrip('/')}: pipeline"
        if ours:
            out = {kv.key: kv.value for kv in status.values}
            out["_level"] = str(int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level))
            out["_message"] = status.message
            return out
    return None


def wait_diagnostics(h: "Harness", ns: str, pred: Callable[[dict], bool] = lambda d: True,
                     timeout: float = 10.0) -> dict[str, str]:
    """The newest /diagnostics status of the node in namespace ``ns`` once it satisfies pred
    (the harness must subscribe to /diagnostics); AssertionError with the last one seen."""
    hw = f"{ns}/reflector_depth"
    found: dict[str, str] = {}

    def check() -> bool:
        for msg in reversed(h.received["/diagnostics"]):
            vals = diagnostics_values(msg, hardware_id=hw)
            if vals is not None:
                found.clear()
                found.update(vals)
                return pred(vals)
        return False

    assert h.wait_for(check, timeout), f"no matching diagnostics; last: {found}"
    return found


# ----------------------------------------------------------------------------- harness

class Harness:
    """One in-process rclpy node: publishers for camera topics, collecting subscribers.

    Its own rclpy Context, so several harnesses (or other test modules) never share state.
    Every received message is appended to `self.received[topic]` with its arrival time.
    """

    def __init__(self, name: str = "reflector_test_harness") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        try:  # large messages over SHM, as the node does; only a speed-up, never fatal
            from reflector_ros.ros.fastdds import apply_default_profile
            apply_default_profile()
        except Exception as exc:  # noqa: BLE001
            print(f"ros_helpers: Fast DDS profile not applied: {exc}", file=sys.stderr)
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.lock = threading.Lock()
        self._pubs: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}

    @staticmethod
    def qos(kind: str = "reliable", depth: int = 10):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        rel = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel)

    def publisher(self, topic: str, msg_type: Any, qos: str = "reliable", depth: int = 10):
        if topic not in self._pubs:
            self._pubs[topic] = self.node.create_publisher(msg_type, topic, self.qos(qos, depth))
        return self._pubs[topic]

    def publish(self, topic: str, msg: Any, qos: str = "reliable") -> None:
        self.publisher(topic, type(msg), qos).publish(msg)

    def subscribe(self, topic: str, msg_type: Any, qos: str = "reliable", depth: int = 50,
                  key: str | None = None) -> list[Any]:
        """Collect `topic` into received[key or topic]; returns that list."""
        key = key or topic

        def cb(msg: Any) -> None:
            with self.lock:
                self.received[key].append(msg)
                self.arrivals[key].append(time.monotonic())

        self._subs[key] = self.node.create_subscription(msg_type, topic, cb, self.qos(qos, depth))
        return self.received[key]

    def unsubscribe(self, key: str) -> None:
        sub = self._subs.pop(key, None)
        if sub is not None:
            self.node.destroy_subscription(sub)

    def subscribe_outputs(self, prefix: str = "", qos: str = "reliable") -> None:
        """All outputs of the depth node (depth, camera_info, confidence, colored, points)."""
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        for topic, typ in (("depth/image", Image), ("depth/camera_info", CameraInfo),
                           ("depth/confidence", Image), ("depth/colored", Image), ("points", PointCloud2)):
            self.subscribe(prefix + topic, typ, qos)

    def subscribe_diagnostics(self) -> list[Any]:
        from diagnostic_msgs.msg import DiagnosticArray

        return self.subscribe("/diagnostics", DiagnosticArray, "reliable", depth=20)

    def clear(self) -> None:
        with self.lock:
            for v in self.received.values():
                v.clear()
            for v in self.arrivals.values():
                v.clear()

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.02, max(end - time.monotonic(), 0.0)))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Spin until predicate() is true; False on timeout (assert on it for a clear failure)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return bool(predicate())

    def wait_matched(self, topic: str, count: int = 1, timeout: float = 15.0) -> bool:
        """Until `count` subscribers listen to our publisher on `topic` (discovery done)."""
        pub = self._pubs[topic]
        return self.wait_for(lambda: pub.get_subscription_count() >= count, timeout)

    def wait_publisher(self, topic: str, timeout: float = 15.0) -> bool:
        """Until someone publishes `topic` (e.g. the node is up)."""
        return self.wait_for(lambda: self.node.count_publishers(topic) > 0, timeout)

    def set_parameters(self, node_fqn: str, timeout: float = 15.0, **values: Any) -> list[Any]:
        """Call `<node_fqn>/set_parameters` (the standard service); one SetParametersResult per value."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"{node_fqn}/set_parameters")
        try:
            assert self.wait_for(client.service_is_ready, timeout), f"{node_fqn}/set_parameters not available"
            request = SetParameters.Request(
                parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
            future = client.call_async(request)
            assert self.wait_for(future.done, timeout), f"{node_fqn}/set_parameters did not answer"
            return list(future.result().results)
        finally:
            self.node.destroy_client(client)

    def wait_log(self, proc: subprocess.Popen, needle: str, timeout: float = 10.0) -> bool:
        """Spin until the node's log contains `needle`."""
        return self.wait_for(lambda: needle in read_log(proc), timeout)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
