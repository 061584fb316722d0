"""`reflector_depth`: camera image + CameraInfo in, metric depth, confidence and a cloud out.

ROS glue around ``reflector_ros.pipeline.DepthPipeline``, which does the frame's work:
parameters, QoS, subscriptions, the latest-frame-wins worker, message <-> array
conversion (``ros/convert.py``), publishing and /diagnostics (``ros/diagnostics.py``).
The subscription callback only drops the newest frame into a one-slot mailbox; a worker
thread (never the executor) decodes, infers and publishes, so the latest frame always
wins and latency never builds up behind a slow model. Works unchanged on Humble, Jazzy
and Kilted (only long-standing rclpy APIs).
"""
from __future__ import annotations

import difflib
import threading
import time
import traceback
from functools import partial
from typing import Any

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from diagnostic_msgs.msg import DiagnosticArray

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.camera_info import CameraInfoFields, calibrated_size, read_calibration
from reflector_ros.core.depth import colorize
from reflector_ros.core.errors import InputError
from reflector_ros.pipeline import DepthPipeline
from reflector_ros.ros import convert, diagnostics
from reflector_ros.ros.params import (DEFAULTS, PARAMS, changed_startup_params, frame_settings, normalize,
                                      validate_params)

try:                      # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:       # Humble
    from rclpy.qos_event import (PublisherEventCallbacks, SubscriptionEventCallbacks,  # type: ignore[no-redef]
                                 UnsupportedEventTypeError)

NODE_NAME = "reflector_depth"
# parameters rclpy or launch give every node, not ours to check
FOREIGN_PARAMS = ("use_sim_time", "start_type_description_service", "qos_overrides.")


class StartupError(Exception):
    """Parameters or model the node cannot start with; the text is for the user, no traceback."""


def _qos(kind: str, depth: int) -> QoSProfile:
    rel = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel,
                      durability=DurabilityPolicy.VOLATILE)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class DepthNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, dynamic_typing=True))
        raw = {name: self.get_parameter(name).value for name in PARAMS}
        errors = validate_params(raw)
        if errors:
            raise StartupError("invalid parameters:\n  - " + "\n  - ".join(errors))
        unknown = self._unknown_parameters()
        self._p: dict[str, Any] = normalize(raw)
        self._state: dict[str, str] = {"rectify": "off (no camera_info yet)", "calibration": "none",
                                       "network_input": "-", "frame_id": "-"}
        from reflector_ros.backends import start_backend

        try:
            self.backend, self._backend_why, warm_ms = start_backend(
                self._p["backend"], self._p["model"] or None, engine_dir=self._p["engine_dir"] or None,
                precision=self._p["precision"], num_threads=self._p["num_threads"],
                cpu_spin_wait=self._p["cpu_spin_wait"], logger=self._backend_says)
        except RuntimeError as exc:
            raise StartupError(str(exc)) from None
        self.pipeline = DepthPipeline(self.backend)
        meta = self.backend.meta
        size = (f"follows the camera (canonical focal {meta.focal_canonical:g} px)"
                if meta.input_mode == "canonical" else f"{meta.input_width}x{meta.input_height}")
        self.get_logger().info(f"{self.backend.name} ({self._backend_why}); network input {size}; "
                               f"warm-up {warm_ms:.0f} ms")

        self._slot: Any = None                     # one-slot mailbox: the latest frame wins
        self._slot_lock = threading.Lock()
        self._slot_event = threading.Event()
        self._stop = threading.Event()
        self._camera: CameraInfoFields | None = None
        self._last_stamp_ns: int | None = None
        self._buffers: dict[str, np.ndarray] = {}  # message_array()s reused frame to frame (no copies)
        self._throttle = diagnostics.Throttle()
        self._qos_problem: dict[str, tuple[str, float]] = {}   # side -> (what an incompatible peer asked, when)
        if unknown:
            self._state["unknown_parameters"] = unknown
            self.get_logger().warning(f"unknown parameters, ignored: {unknown}")
        self.stats = diagnostics.FrameStats()
        self._waiting_info = False

        in_qos = _qos("best_effort" if self._p["input_qos"] == "sensor_data" else self._p["input_qos"], 1)
        compressed = self._p["compressed_input"]
        self._image_topic = "image/compressed" if compressed else "image"
        self._topic = self.resolve_topic_name(self._image_topic)
        self._subscribe(CompressedImage if compressed else Image, self._image_topic, self._on_image, in_qos)
        self._subscribe(CameraInfo, "camera_info", self._on_camera_info, in_qos)
        out_qos = _qos(self._p["output_qos"], 2)
        self.pub_depth = self._publisher(Image, "depth/image", out_qos)
        self.pub_info = self._publisher(CameraInfo, "depth/camera_info", out_qos)
        self.pub_conf = self._publisher(Image, "depth/confidence", out_qos)
        self.pub_colored = self._publisher(Image, "depth/colored", out_qos)
        self.pub_points = self._publisher(PointCloud2, "points", out_qos)
        self._state["topics"] = (f"in {self._topic}, {self.resolve_topic_name('camera_info')} "
                                 f"({self._p['input_qos']}); out {self.resolve_topic_name('depth/image')} … "
                                 f"({self._p['output_qos']})")
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", _qos("reliable", 1))
        # steady clock: diagnostics keep coming (and say "no images") while a sim-time bag is paused
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_timer = self.create_timer(self._p["diagnostics_period"], self._publish_diagnostics,
                                             clock=self._steady)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="reflector_depth_worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ set-up

    def _backend_says(self, msg: str) -> None:
        """The backend's messages (an engine build that takes minutes) go to the log and, the
        latest one, to /diagnostics."""
        self.get_logger().info(msg)
        self._state["backend_note"] = msg

    def _unknown_parameters(self) -> str:
        """The parameters given at start-up (-p, a params file) that this node does not have,
        each with the closest name it does have: a typo would otherwise leave a default."""
        given = getattr(self, "_parameter_overrides", {})   # rclpy keeps the overrides here (Humble..Kilted)
        unknown = [n for n in given if n not in PARAMS and not n.startswith(FOREIGN_PARAMS)]
        said = []
        for name in sorted(unknown):
            close = difflib.get_close_matches(name, list(PARAMS), n=1)
            said.append(f"{name} (did you mean {close[0]}?)" if close else name)
        return ", ".join(said)

    def _subscribe(self, msg_type: Any, topic: str, callback: Any, qos: QoSProfile) -> None:
        """A subscription that reports images lost before they reach the node (DDS drops large
        best-effort messages) and publishers whose QoS cannot match."""
        resolved = self.resolve_topic_name(topic)
        incompatible = partial(self._on_incompatible, "input", resolved)
        lost = self._on_lost if topic == self._image_topic else None
        # an RMW without an event type raises when it is asked for: ask for less
        for events in (dict(incompatible_qos=incompatible, message_lost=lost), dict(incompatible_qos=incompatible), {}):
            try:
                self.create_subscription(msg_type, topic, callback, qos,
                                         event_callbacks=SubscriptionEventCallbacks(**events))
                return
            except UnsupportedEventTypeError:
                continue

    def _publisher(self, msg_type: Any, topic: str, qos: QoSProfile) -> Any:
        incompatible = partial(self._on_incompatible, "output", self.resolve_topic_name(topic))
        try:
            return self.create_publisher(msg_type, topic, qos,
                                         event_callbacks=PublisherEventCallbacks(incompatible_qos=incompatible))
        except UnsupportedEventTypeError:   # an RMW without the incompatible-QoS event
            return self.create_publisher(msg_type, topic, qos)

    def _on_lost(self, info: Any) -> None:
        self.stats.lost(int(info.total_count_change))

    def _on_incompatible(self, side: str, topic: str, info: Any) -> None:
        policy = qos_policy_name_from_kind(info.last_policy_kind)
        reliability = "RELIABILITY" in str(policy).upper()
        if side == "input":
            text = f"a publisher on {topic} offers QoS this node cannot receive ({policy}), so its messages never arrive: "
            text += (f"input_qos is {self._p['input_qos']}; set it to match the camera (sensor_data / best_effort "
                     "takes either)" if reliability else "the publisher must change (the node asks only for reliability)")
        else:
            text = f"a subscriber of {topic} asks for QoS this node does not offer ({policy}), so it receives nothing: "
            text += (f"output_qos is {self._p['output_qos']}; set it to reliable (which serves best-effort subscribers "
                     "too)" if reliability else "the subscriber must change (the node offers volatile, keep-last "
                     "messages with no deadline)")
        self._qos_problem[side] = (text, time.monotonic())
        self._warn("qos", text)

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
        with self._slot_lock:
            replaced = self._slot is not None
            self._slot = msg
        self._slot_event.set()
        self.stats.arrived(replaced)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        fields = CameraInfoFields.from_msg(msg)
        if fields != self._camera:   # drivers resend one calibration with every frame: check it once
            try:
                read_calibration(fields, calibrated_size(fields, (640, 480)))
            except InputError as exc:
                self._warn("camera_info", f"ignoring camera_info ({exc}); keeping the previous good one")
                return
            self._camera = fields

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._slot_event.wait(0.1):
                continue
            with self._slot_lock:
                msg, self._slot = self._slot, None
                self._slot_event.clear()
            if msg is None:
                continue
            try:
                self._process(msg)
            except InputError as exc:
                self.stats.count("skipped_bad")
                self._state["last_skipped"] = str(exc)
                self._warn("input", f"skipping frame from {self._topic}: {exc}")
            except Exception as exc:  # noqa: BLE001  (the worker must outlive any one frame)
                self.stats.count("skipped_bad")
                self._state["last_skipped"] = f"unexpected {type(exc).__name__}: {exc} (see the log)"
                self._warn("bug", f"unexpected error on a frame, skipped:\n{traceback.format_exc()}", error=True)

    def _outputs_wanted(self, p: dict[str, Any]) -> dict[str, bool]:
        depth = self.pub_depth.get_subscription_count() > 0 or self.pub_info.get_subscription_count() > 0
        return {"depth": depth,
                "confidence": p["publish_confidence"] and self.pub_conf.get_subscription_count() > 0,
                "colored": p["publish_colored"] and self.pub_colored.get_subscription_count() > 0,
                "points": p["publish_points"] and self.pub_points.get_subscription_count() > 0}

    def _frame_camera(self, p: dict[str, Any], width: int, height: int) -> CameraInfoFields | Intrinsics | None:
        if self._camera is not None:
            return self._camera
        if p["fallback_fx"] > 0:
            f = p["fallback_fx"]
            return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)
        return None

    def _process(self, msg: Any) -> None:
        p = self._p
        want = self._outputs_wanted(p)
        if not any(want.values()):
            self.stats.count("idle")
            return
        header = msg.header
        stamp = _stamp_ns(header.stamp)
        if self._last_stamp_ns is not None and stamp < self._last_stamp_ns:
            back_s = (self._last_stamp_ns - stamp) / 1e9
            self._warn("restart", f"stamps on {self._topic} went back {back_s:.3f} s: taken as a restarted source "
                                  "(bag loop, driver restart, simulation reset); its statistics start again")
            self.stats.restarted()
            self.pipeline.restarted()
        self._state["frame_id"] = header.frame_id or "(empty)"
        if not header.frame_id:
            self._warn("frame_id", f"images on {self._topic} have an empty frame_id, so depth, cloud and "
                                   "camera_info carry none either; set it to the camera's optical frame "
                                   "(REP 103, e.g. camera_color_optical_frame) or RViz, Nav2 and tf cannot place them",
                       once=True)
        t0 = time.perf_counter()
        rgb = convert.rgb_from_compressed(msg) if isinstance(msg, CompressedImage) else convert.rgb_from_image(msg)
        decode_ms = (time.perf_counter() - t0) * 1e3
        camera = self._frame_camera(p, rgb.shape[1], rgb.shape[0])
        if camera is None:
            self._waiting_info = True
            self.stats.count("waiting_info")
            self._warn("no_info", f"waiting for camera_info on {self.resolve_topic_name('camera_info')} (no metric "
                                  "scale without a focal length); set fallback_fx to run without it")
            return
        self._waiting_info = False
        self._last_stamp_ns = stamp
        res = self.pipeline.process(rgb, camera, frame_settings(p, want["points"]), self._topic, self._buffer,
                                    t=stamp / 1e9)
        if res.new_plan:
            notes = list(res.plan.notes)
            if self._camera is None:
                notes.insert(0, f"no camera_info: fallback_fx {p['fallback_fx']:g} px assumed, so the metric scale is "
                                "only as right as that guess")
            net = res.plan.net
            self._state.update(rectify=res.plan.rectify_state,
                               network_input=f"{net.width}x{net.height} (width x height), focal scale "
                                             f"{net.focal_scale:.3f}",
                               image=f"{rgb.shape[1]}x{rgb.shape[0]}",
                               depth_image=f"{res.depth.shape[1]}x{res.depth.shape[0]}",
                               calibration="; ".join(notes) or "ok")
            for note in notes:
                self._warn("calibration", note)
        t = dict(res.timings_ms, decode_ms=decode_ms)
        if res.anchor is not None:
            self._note_anchor(res.anchor)

        # depth and its camera_info go out first: they are what most consumers wait for
        t0 = time.perf_counter()
        first = [(self.pub_depth, convert.depth_image_msg(header, res.depth, p["depth_encoding"])),
                 (self.pub_info, convert.camera_info_msg(header, res.camera))]
        t["depth_msg_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        for pub, out in first:
            pub.publish(out)
        publish_s = time.perf_counter() - t0
        latency_ms = (self.get_clock().now().nanoseconds - stamp) / 1e6
        t0 = time.perf_counter()
        rest: list[tuple[Any, Any]] = []
        if want["confidence"]:
            rest.append((self.pub_conf, convert.confidence_msg(header, res.confidence)))
        if want["colored"]:
            bgr = colorize(res.depth, p["min_depth"], p["max_depth"])
            rest.append((self.pub_colored, convert.colored_msg(header, bgr)))
        t["depth_msg_ms"] += (time.perf_counter() - t0) * 1e3
        if res.cloud is not None:
            t0 = time.perf_counter()
            rgb_field = p["points_rgb"]
            rest.append((self.pub_points, convert.cloud_msg(header, res.cloud, *res.cloud.shape[:2], rgb_field)))
            t["points_msg_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        for pub, out in rest:
            pub.publish(out)
        t["publish_ms"] = (time.perf_counter() - t0 + publish_s) * 1e3
        self.stats.processed(latency_ms, t)
        self._state.pop("backend_note", None)    # whatever it said (an engine build) is over

    def _note_anchor(self, a: Any) -> None:
        """The scale anchor's state for /diagnostics; a change of source is said in the log."""
        before = self._state.get("scale_source")
        self._state.update(scale=f"{a.scale:.4f}", scale_source=a.source, floor_inliers=f"{a.inlier_fraction:.2f}")
        if before is not None and before != a.source:
            say = {"floor": "floor in view again: scale from the camera height",
                   "held": "no floor in view: holding the last floor scale",
                   "model": "no floor in view for longer than scale_anchor.hold_s: using the network's own scale"}
            (self.get_logger().info if a.source == "floor" else self.get_logger().warning)(
                f"scale anchor: {say[a.source]} ({a.scale:.3f})")

    # ------------------------------------------------------------------ logging and diagnostics

    def _warn(self, kind: str, text: str, error: bool = False, once: bool = False) -> None:
        line = self._throttle.admit(kind, text, once)
        if line is not None:
            (self.get_logger().error if error else self.get_logger().warning)(line)

    def _publish_diagnostics(self) -> None:
        waiting = self._camera is None and self._p["fallback_fx"] <= 0
        values = {"backend": f"{self.backend.name} ({self._backend_why})",
                  "cloud_built_on": self.backend.name if getattr(self.backend, "builds_cloud", False) else "host",
                  **self._state, "waiting_for_camera_info": str(waiting).lower()}
        idle = not any(self._outputs_wanted(self._p).values())
        arr = diagnostics.status_array(self.stats.snapshot(), values, self._topic, self._p["diagnostics_period"],
                                       self._waiting_info and waiting, idle, self.get_clock().now().to_msg(),
                                       self.get_fully_qualified_name(), dict(self._qos_problem))
        self.pub_diag.publish(arr)

    def shutdown(self) -> None:
        self._stop.set()
        self._slot_event.set()
        self._worker.join(timeout=5.0)
