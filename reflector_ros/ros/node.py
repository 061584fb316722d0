"""`reflector_depth`: camera image + CameraInfo in, metric depth, confidence and a cloud out.

Thin rclpy glue around the backend and the pure conversions in ``ros/convert.py``.
The subscription callback only drops the newest frame into a one-slot mailbox; a worker
thread (never the executor) decodes, infers and publishes, so the latest frame always
wins and latency never builds up behind a slow model. Works unchanged on Humble, Jazzy
and Kilted (only long-standing rclpy APIs).
"""
from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any, NamedTuple

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from reflector_ros.core.camera import Intrinsics, scale_intrinsics
from reflector_ros.core.depth import colorize, finalize_depth
from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import CloudSpec, build_cloud, ray_lengths, ray_table
from reflector_ros.core.rectify import Calibration, plan, rectify
from reflector_ros.meta import focal_scale
from reflector_ros.ros import convert
from reflector_ros.ros.params import DEFAULTS, PARAMS, changed_startup_params, normalize, validate_params

NODE_NAME = "reflector_depth"
STATUS_NAME = "reflector_depth: pipeline"
RESTART_JUMP_S = 3.0       # a stamp this far back is a restarted source (looping bag), not a stale frame
WARN_PERIOD_S = 5.0        # one line per distinct problem per this many seconds
STAGES = ("decode_ms", "rectify_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "points_ms", "depth_msg_ms",
          "points_msg_ms", "publish_ms")
WINDOW = 100               # frames in the latency / stage-timing windows
RATE_WINDOW_S = 5.0


class Rectifier(NamedTuple):
    """Undistortion for one calibration: maps and the rectified pixels the lens saw (None: all)."""
    cal: Calibration
    map1: np.ndarray
    map2: np.ndarray
    seen: np.ndarray | None


class StartupError(Exception):
    """Parameters or model the node cannot start with; the text is for the user, no traceback."""


def _qos(kind: str, depth: int) -> QoSProfile:
    rel = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel,
                      durability=DurabilityPolicy.VOLATILE)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _median(values: Any) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _percentile(values: Any, q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else float("nan")


def _rate(times: deque, now: float) -> float:
    """Events per second over the last RATE_WINDOW_S seconds (monotonic times)."""
    while times and now - times[0] > RATE_WINDOW_S:
        times.popleft()
    if len(times) < 2:
        return 0.0
    return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


class DepthNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, dynamic_typing=True))
        raw = {name: self.get_parameter(name).value for name in PARAMS}
        errors = validate_params(raw)
        if errors:
            raise StartupError("invalid parameters:\n  - " + "\n  - ".join(errors))
        self._p: dict[str, Any] = normalize(raw)

        self.backend = self._make_backend()
        self.backend_label = f"{self.backend.name} ({self._backend_why})"
        self.get_logger().info(f"model input {self.backend.meta.input_width}x{self.backend.meta.input_height}; "
                               f"warm-up {self._warm_up():.0f} ms")

        # one-slot mailbox: latest frame wins
        self._slot: tuple[Any, int, float] | None = None
        self._slot_lock = threading.Lock()
        self._slot_event = threading.Event()
        self._stop = threading.Event()

        self._camera_info: CameraInfo | None = None
        self._last_stamp_ns: int | None = None
        self._rays_key: tuple | None = None
        self._rays: tuple[np.ndarray, np.ndarray] | None = None
        self._camera_cache: tuple[tuple, tuple[Intrinsics, Rectifier | None]] | None = None
        self._good_info_key: tuple | None = None
        self._rectify_state = "off (no camera_info yet)"
        self._unseen: tuple[tuple, np.ndarray] | None = None   # (key, mask at the depth size)
        self._buffers: dict[str, np.ndarray] = {}  # message_array()s reused frame to frame (no copies)
        self._warned: dict[str, tuple[float, int]] = {}

        # statistics (written by worker / callbacks, read by the diagnostics timer)
        self._stats_lock = threading.Lock()
        self._in_times: deque = deque()
        self._out_times: deque = deque()
        self._latency_ms: deque = deque(maxlen=WINDOW)
        self._stage_ms: dict[str, deque] = {s: deque(maxlen=WINDOW) for s in STAGES}
        self._counts = {"received": 0, "processed": 0, "dropped": 0, "skipped_bad": 0, "idle": 0}
        self._last_arrival = time.monotonic()
        self._waiting_info = False
        self._started = time.monotonic()

        in_qos = _qos("best_effort" if self._p["input_qos"] == "sensor_data" else self._p["input_qos"], 1)
        if self._p["compressed_input"]:
            self._image_topic = "image/compressed"
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, in_qos)
        else:
            self._image_topic = "image"
            self.create_subscription(Image, "image", self._on_image, in_qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, in_qos)

        out_qos = _qos(self._p["output_qos"], 2)
        self.pub_depth = self.create_publisher(Image, "depth/image", out_qos)
        self.pub_info = self.create_publisher(CameraInfo, "depth/camera_info", out_qos)
        self.pub_conf = self.create_publisher(Image, "depth/confidence", out_qos)
        self.pub_colored = self.create_publisher(Image, "depth/colored", out_qos)
        self.pub_points = self.create_publisher(PointCloud2, "points", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", _qos("reliable", 1))
        # steady clock: diagnostics keep coming (and say "no images") while a sim-time bag is paused
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_timer = self.create_timer(self._p["diagnostics_period"], self._publish_diagnostics,
                                             clock=self._steady)

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="reflector_depth_worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ set-up

    def _make_backend(self) -> Any:
        from reflector_ros.backends import make_backend

        name, model = self._p["backend"], self._p["model"] or None
        try:
            backend = make_backend(name, model, engine_dir=self._p["engine_dir"] or None,
                                   precision=self._p["precision"], num_threads=self._p["num_threads"],
                                   cpu_spin_wait=self._p["cpu_spin_wait"],
                                   logger=self.get_logger().info)
        except InputError as exc:
            raise StartupError(f"cannot load the model: {exc}") from None
        except Exception as exc:  # noqa: BLE001  (onnxruntime/TensorRT raise their own types on bad files)
            raise StartupError(f"backend '{name}' with model '{model or 'embedded default'}' could not start: "
                               f"{type(exc).__name__}: {exc}") from None
        self._backend_why = str(getattr(backend, "reason", "") or ("requested" if name != "auto" else "auto"))
        return backend

    def _warm_up(self) -> float:
        """Two throw-away inferences, so the first camera frame does not pay for the
        runtime's lazy allocations and kernel selection (ORT's first run is several times
        slower; CUDA graphs and TensorRT contexts are captured here). Returns ms."""
        meta = self.backend.meta
        hw = (meta.input_height, meta.input_width)
        dummy = np.full((*hw, 3), 127, np.uint8)
        t0 = time.perf_counter()
        try:
            for _ in range(2):
                self.backend.run(dummy, 1.0, hw)
        except Exception as exc:  # noqa: BLE001  (runtimes raise their own types)
            raise StartupError(f"backend {self.backend.name} failed its warm-up inference: "
                               f"{type(exc).__name__}: {exc}") from None
        return (time.perf_counter() - t0) * 1e3

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 message_array for this output, rebuilt only when its shape changes."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = convert.message_array(shape, np.float32)
        return buf

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        new = {p.name: p.value for p in params if p.name in DEFAULTS}
        if not new:
            return SetParametersResult(successful=True)
        restart = changed_startup_params(self._p, new)
        if restart:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(restart)} can only be set at start-up; restart the node to change it"))
        merged = {**self._p, **new}
        errors = validate_params(merged, check_files=False)
        if errors:
            return SetParametersResult(successful=False, reason="; ".join(errors))
        period_changed = merged["diagnostics_period"] != self._p["diagnostics_period"]
        self._p = normalize(merged)  # one reference swap: the worker reads a consistent snapshot
        if period_changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(self._p["diagnostics_period"], self._publish_diagnostics,
                                                 clock=self._steady)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _on_image(self, msg: Any) -> None:
        arrival = time.monotonic()
        with self._slot_lock:
            replaced = self._slot is not None
            self._slot = (msg, self.get_clock().now().nanoseconds, arrival)
        self._slot_event.set()
        with self._stats_lock:
            self._counts["received"] += 1
            self._counts["dropped"] += int(replaced)
            self._in_times.append(arrival)
            self._last_arrival = arrival

    def _on_camera_info(self, msg: CameraInfo) -> None:
        key = convert.camera_info_key(msg)
        if key != self._good_info_key:   # drivers resend one calibration with every frame: check it once
            try:
                w, h = int(msg.width) or 1, int(msg.height) or 1   # 0 = "as the image"
                convert.calibration_from_camera_info(msg, w, h)
            except InputError as exc:
                self._warn(f"camera_info:{exc}", f"ignoring camera_info ({exc}); keeping the previous good one")
                return
            self._good_info_key = key
        self._camera_info = msg

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._slot_event.wait(0.1):
                continue
            with self._slot_lock:
                item, self._slot = self._slot, None
                self._slot_event.clear()
            if item is None:
                continue
            msg = item[0]
            try:
                self._process(msg)
            except InputError as exc:
                with self._stats_lock:
                    self._counts["skipped_bad"] += 1
                self._warn(f"input:{exc}", f"skipping frame from {self._image_topic}: {exc}")
            except Exception as exc:  # noqa: BLE001  (the worker must outlive any one frame)
                with self._stats_lock:
                    self._counts["skipped_bad"] += 1
                self._warn(f"bug:{type(exc).__name__}:{exc}",
                           f"unexpected error on a frame, skipped:\n{traceback.format_exc()}", error=True)

    def _outputs_wanted(self, p: dict[str, Any]) -> dict[str, bool]:
        info = self.pub_info.get_subscription_count() > 0
        depth = self.pub_depth.get_subscription_count() > 0
        conf = p["publish_confidence"] and self.pub_conf.get_subscription_count() > 0
        colored = p["publish_colored"] and self.pub_colored.get_subscription_count() > 0
        points = p["publish_points"] and self.pub_points.get_subscription_count() > 0
        return {"depth": depth or info, "confidence": conf, "colored": colored, "points": points}

    def _camera(self, p: dict[str, Any], width: int, height: int) -> tuple[Intrinsics, Rectifier | None] | None:
        """The pinhole camera the network will see, and the maps to rectify with (None: use
        the frame as it is). Rectified frames live in P's camera, raw ones without
        distortion too (P = K there), which is what depth/camera_info states."""
        info = self._camera_info
        if info is not None:
            key = (convert.camera_info_key(info), width, height, p["rectify"])
            if self._camera_cache is None or self._camera_cache[0] != key:
                self._camera_cache = (key, self._camera_from_info(info, p["rectify"], width, height))
            return self._camera_cache[1]
        if p["fallback_fx"] > 0:
            f = p["fallback_fx"]
            return Intrinsics(fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0, width=width, height=height), None
        return None

    def _camera_from_info(self, info: CameraInfo, setting: str, width: int, height: int
                          ) -> tuple[Intrinsics, Rectifier | None]:
        """Once per calibration: the decision, the maps (~0.1 s at VGA) and one log line."""
        cal = convert.calibration_from_camera_info(info, width, height)
        how = plan(cal, setting, self.resolve_topic_name(self._image_topic))
        self._rectify_state = how.state
        if how.warning:
            self.get_logger().warning(how.warning)
        if how.maps is None:
            return how.intrinsics, None
        self.get_logger().info(f"undistorting {width}x{height} frames ({cal.model}) into P's camera: {how.state}")
        return how.intrinsics, Rectifier(cal, *how.maps, how.seen)

    def _unseen_mask(self, cal: Calibration, seen: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """Depth pixels the lens never saw, at the depth's resolution (cached)."""
        key = (cal, out_hw)
        if self._unseen is None or self._unseen[0] != key:
            small = cv2.resize(seen.astype(np.uint8), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)
            self._unseen = (key, small == 0)
        return self._unseen[1]

    def _process(self, msg: Any) -> None:
        p = self._p
        want = self._outputs_wanted(p)
        if not any(want.values()):
            with self._stats_lock:
                self._counts["idle"] += 1
            return
        header = msg.header
        stamp = _stamp_ns(header.stamp)
        if self._last_stamp_ns is not None and stamp < self._last_stamp_ns:
            back_s = (self._last_stamp_ns - stamp) / 1e9
            if back_s <= RESTART_JUMP_S:
                raise InputError(f"stamp {stamp / 1e9:.3f} is {back_s * 1e3:.0f} ms older than the last "
                                 f"processed frame; out-of-order frame")
            self._warn("restart", f"stamps jumped back {back_s:.1f} s: treating it as a restarted source "
                                  f"(looping bag?) and carrying on")
        t: dict[str, float] = {}

        t0 = time.perf_counter()
        rgb = convert.rgb_from_compressed(msg) if isinstance(msg, CompressedImage) else convert.rgb_from_image(msg)
        t["decode_ms"] = (time.perf_counter() - t0) * 1e3
        height, width = rgb.shape[:2]

        camera = self._camera(p, width, height)
        if camera is None:
            self._waiting_info = True
            self._warn("no_info", "waiting for camera_info on "
                       f"{self.resolve_topic_name('camera_info')} (no metric scale without a focal length); "
                       "set fallback_fx to run without it")
            return
        self._waiting_info = False
        self._last_stamp_ns = stamp
        intr, rect = camera

        out_w = max(1, int(round(width * p["output_scale"])))
        out_h = max(1, int(round(height * p["output_scale"])))
        unseen = None
        if rect is not None:
            t0 = time.perf_counter()
            rgb = rectify(rgb, rect.map1, rect.map2)
            unseen = None if rect.seen is None else self._unseen_mask(rect.cal, rect.seen, (out_h, out_w))
            t["rectify_ms"] = (time.perf_counter() - t0) * 1e3
        out_intr = scale_intrinsics(intr, out_w, out_h)
        scale = focal_scale(intr.fx, intr.fy, width, height, self.backend.meta)

        spec = None
        if want["points"]:
            rays, lengths = self._ray_table(out_intr, p["points_stride"])
            spec = CloudSpec(rays, lengths, p["points_stride"], p["min_depth"], p["max_depth"], p["min_confidence"],
                             p["points_min_range"], p["points_max_range"] if p["points_max_range"] > 0 else math.inf,
                             p["points_min_confidence"], bool(p["points_rgb"]),
                             out=self._buffer("cloud", (*rays.shape[:2], 4)))
        # GPU backends pack the cloud beside the network, straight into the message buffer
        # (not where the lens leaves pixels unseen: those are masked on the host below)
        res = self.backend.run(rgb, scale, (out_h, out_w),
                               cloud=spec if getattr(self.backend, "builds_cloud", False) and unseen is None else None)
        for key, val in (res.timings_ms or {}).items():
            t[key if key.endswith("_ms") else f"{key}_ms"] = float(val)

        # depth and its camera_info go out first: they are what most consumers wait for
        t0 = time.perf_counter()
        depth = finalize_depth(res.depth, res.confidence, p["min_depth"], p["max_depth"], p["min_confidence"],
                               out=self._buffer("depth", (out_h, out_w)))
        confidence = res.confidence
        if unseen is not None:   # rectified pixels outside the raw frame: no depth, no confidence
            depth[unseen] = np.nan
            confidence = np.where(unseen, np.float32(0.0), confidence)
        first = [(self.pub_depth, convert.depth_image_msg(header, depth, p["depth_encoding"])),
                 (self.pub_info, convert.camera_info_msg(header, out_intr))]
        t["depth_msg_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        for pub, out in first:
            pub.publish(out)
        publish_s = time.perf_counter() - t0
        latency_ms = (self.get_clock().now().nanoseconds - stamp) / 1e6

        msgs: list[tuple[Any, Any]] = []
        t0 = time.perf_counter()
        if want["confidence"]:
            msgs.append((self.pub_conf, convert.confidence_msg(header, confidence)))
        if want["colored"]:
            msgs.append((self.pub_colored, convert.colored_msg(header, colorize(depth, p["min_depth"], p["max_depth"]))))
        t["depth_msg_ms"] += (time.perf_counter() - t0) * 1e3

        if spec is not None:
            t0 = time.perf_counter()
            buf = res.cloud if res.cloud is not None else build_cloud(depth, confidence, rgb, spec)
            msgs.append((self.pub_points, convert.cloud_msg(header, buf, buf.shape[0], buf.shape[1], spec.rgb)))
            t["points_msg_ms"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        for pub, out in msgs:
            pub.publish(out)
        done = time.monotonic()
        t["publish_ms"] = (time.perf_counter() - t0 + publish_s) * 1e3
        with self._stats_lock:
            self._counts["processed"] += 1
            self._out_times.append(done)
            self._latency_ms.append(latency_ms)
            for key, val in t.items():
                if key in self._stage_ms:
                    self._stage_ms[key].append(val)

    def _ray_table(self, intr: Intrinsics, stride: int) -> tuple[np.ndarray, np.ndarray]:
        """Cached rays and their lengths: intrinsics change rarely, so back-projection is
        one multiply per axis and the range filter one more per frame."""
        key = (intr, stride)
        if key != self._rays_key or self._rays is None:
            rays = ray_table(intr, stride)
            self._rays = (rays, ray_lengths(rays))
            self._rays_key = key
        return self._rays

    # ------------------------------------------------------------------ logging and diagnostics

    def _warn(self, key: str, text: str, error: bool = False) -> None:
        """Each distinct problem at most once per WARN_PERIOD_S, with a count of the repeats."""
        now = time.monotonic()
        last, repeats = self._warned.get(key, (-math.inf, 0))
        if now - last < WARN_PERIOD_S:
            self._warned[key] = (last, repeats + 1)
            return
        self._warned[key] = (now, 0)
        if repeats:
            text += f" ({repeats} more like this since the last report)"
        (self.get_logger().error if error else self.get_logger().warning)(text)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._stats_lock:
            counts = dict(self._counts)
            in_hz, out_hz = _rate(self._in_times, now), _rate(self._out_times, now)
            lat = list(self._latency_ms)
            stages = {k: _median(v) for k, v in self._stage_ms.items() if v}   # stages that ran
            silent_s = now - self._last_arrival
        period = self._p["diagnostics_period"]
        level, message = DiagnosticStatus.OK, "ok"
        if self._waiting_info and self._camera_info is None:
            level, message = DiagnosticStatus.WARN, "waiting for camera_info"
        elif silent_s > max(3.0, 2.0 * period):
            level, message = DiagnosticStatus.WARN, f"no images on {self.resolve_topic_name(self._image_topic)} for {silent_s:.0f} s"
        elif counts["received"] and not any(self._outputs_wanted(self._p).values()):
            message = "idle: no subscriber on any output"
        values = {
            "input_rate_hz": f"{in_hz:.2f}", "output_rate_hz": f"{out_hz:.2f}",
            "latency_p50_ms": f"{_median(lat):.2f}", "latency_p95_ms": f"{_percentile(lat, 95):.2f}",
            "received_frames": str(counts["received"]), "processed_frames": str(counts["processed"]),
            "dropped_frames": str(counts["dropped"]), "skipped_bad_frames": str(counts["skipped_bad"]),
            "idle_frames": str(counts["idle"]), "backend": self.backend_label,
            "cloud_built_on": self.backend.name if getattr(self.backend, "builds_cloud", False) else "host",
            "rectify": self._rectify_state,
            "waiting_for_camera_info": str(self._camera_info is None and self._p["fallback_fx"] <= 0).lower(),
            **{k: f"{v:.2f}" for k, v in stages.items()},
        }
        status = DiagnosticStatus(level=level, name=STATUS_NAME, message=message,
                                  hardware_id=self.get_fully_qualified_name(),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)

    def shutdown(self) -> None:
        self._stop.set()
        self._slot_event.set()
        self._worker.join(timeout=5.0)


# ---------------------------------------------------------------------- entry points

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("ROS arguments pass through: reflector node --ros-args -p backend:=onnxruntime "
                     "-p model:=my.onnx -r image:=/camera/color/image_raw --params-file config/depth.yaml")


def run(args: argparse.Namespace) -> int:
    return main(getattr(args, "ros_argv", None))


class _StopSignals:
    """SIGINT and SIGTERM both end the node cleanly: exit 0, no traceback, within a poll.

    rclpy installs its signal handlers only for the default context; the node has its
    own, so SIGTERM (what `ros2 launch` sends 5 s after SIGINT) used to kill it outright.
    Until the node spins, a signal interrupts start-up (KeyboardInterrupt). While it
    spins, a signal only sets ``received``: the spin loop wakes every POLL_S to look, and
    the clean-up then lets a frame in flight finish and publish on a live context. A
    second signal during the clean-up or the interpreter's exit is ignored rather than
    breaking it (`ros2 launch` escalates), so the handlers stay installed after main().
    """
    POLL_S = 0.1

    def __init__(self) -> None:
        import signal

        self.received: str | None = None
        self.interrupt = True
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        import signal

        if self.received is not None:
            return
        self.received = signal.Signals(signum).name
        if self.interrupt:
            raise KeyboardInterrupt


def _fastdds_profile() -> tuple[str | None, bool]:
    """Apply our Fast DDS profile unless the user chose otherwise; (the line that says which
    profile is in effect and who set it, whether it is a warning)."""
    try:
        from reflector_ros.ros.fastdds import apply_default_profile, describe_profile
    except ImportError:
        return None, False
    try:
        applied = apply_default_profile()
        return describe_profile(set_by="the node" if applied else None)
    except Exception as exc:  # noqa: BLE001  (a speed-up only; never stop the node for it)
        return f"Fast DDS profile not applied: {exc}", True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    stop = _StopSignals()
    context: rclpy.context.Context | None = None
    node = None
    try:
        profile_line, profile_warn = _fastdds_profile()
        context = rclpy.context.Context()
        rclpy.init(args=argv, context=context)
        try:
            node = DepthNode(context=context)
        except StartupError as exc:
            if stop.received:   # the signal's KeyboardInterrupt, wrapped by a runtime on its way out
                rclpy.logging.get_logger(NODE_NAME).info(f"{stop.received} during start-up: not starting")
                return 0
            rclpy.logging.get_logger(NODE_NAME).error(f"refusing to start: {exc}")
            return 1
        if profile_line:
            (node.get_logger().warning if profile_warn else node.get_logger().info)(profile_line)
        # Everything loaded so far (rclpy, numpy, the runtime) lives for the whole run:
        # keep it out of the collector so a full collection cannot stall a frame (~6 ms).
        gc.collect()
        gc.freeze()
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        stop.interrupt = False
        try:
            while stop.received is None and context.ok():
                executor.spin_once(timeout_sec=stop.POLL_S)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        if stop.received:
            node.get_logger().info(f"{stop.received}: shutting down")
    except KeyboardInterrupt:
        pass
    finally:
        stop.interrupt = False
        stop.received = stop.received or "exit"   # from here on, signals are ignored
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if context is not None:
            context.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
