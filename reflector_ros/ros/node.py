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

import time
import traceback
from functools import partial
from typing import Any

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from diagnostic_msgs.msg import DiagnosticArray

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.camera_info import CameraInfoFields
from reflector_ros.core.depth import colorize
from reflector_ros.core.errors import InputError
from reflector_ros.pipeline import DepthPipeline
from reflector_ros.ros import convert, diagnostics, qos
from reflector_ros.ros.mailbox import LatestFrame
from reflector_ros.ros.diagnostics import stage_timer
from reflector_ros.ros.params import (DEFAULTS, PARAMS, frame_settings, normalize, unknown_parameters,
                                      updated_params, validate_params)

NODE_NAME = "reflector_depth"


class StartupError(Exception):
    """Parameters or model the node cannot start with; the text is for the user, no traceback."""


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
        # rclpy keeps the start-up overrides (-p, params files) in _parameter_overrides (Humble..Kilted)
        unknown = unknown_parameters(getattr(self, "_parameter_overrides", {}))
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
        self.get_logger().info(f"{self.backend.name} ({self._backend_why}); network "
                               f"{self.backend.meta.input_description}; warm-up {warm_ms:.0f} ms")

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
        self._mailbox = LatestFrame(self._handle, "reflector_depth_worker")   # the latest frame wins

        in_qos = qos.profile(self._p["input_qos"], 1)
        compressed = self._p["compressed_input"]
        image_topic = "image/compressed" if compressed else "image"
        self._topic = self.resolve_topic_name(image_topic)
        qos.subscription(self, CompressedImage if compressed else Image, image_topic, self._on_image, in_qos,
                         partial(self._on_incompatible, "input", self._topic), self._on_lost)
        qos.subscription(self, CameraInfo, "camera_info", self._on_camera_info, in_qos,
                         partial(self._on_incompatible, "input", self.resolve_topic_name("camera_info")))
        out_qos = qos.profile(self._p["output_qos"], 2)
        self.pub_depth = self._publisher(Image, "depth/image", out_qos)
        self.pub_info = self._publisher(CameraInfo, "depth/camera_info", out_qos)
        self.pub_conf = self._publisher(Image, "depth/confidence", out_qos)
        self.pub_colored = self._publisher(Image, "depth/colored", out_qos)
        self.pub_points = self._publisher(PointCloud2, "points", out_qos)
        self._state["topics"] = (f"in {self._topic}, {self.resolve_topic_name('camera_info')} "
                                 f"({self._p['input_qos']}); out {self.resolve_topic_name('depth/image')} … "
                                 f"({self._p['output_qos']})")
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", qos.profile("reliable", 1))
        # steady clock: diagnostics keep coming (and say "no images") while a sim-time bag is paused
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_timer = self.create_timer(self._p["diagnostics_period"], self._publish_diagnostics,
                                             clock=self._steady)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ set-up

    def _backend_says(self, msg: str) -> None:
        """The backend's messages (an engine build that takes minutes) go to the log and, the
        latest one, to /diagnostics."""
        self.get_logger().info(msg)
        self._state["backend_note"] = msg

    def _publisher(self, msg_type: Any, topic: str, qos_profile: Any) -> Any:
        return qos.publisher(self, msg_type, topic, qos_profile,
                             partial(self._on_incompatible, "output", self.resolve_topic_name(topic)))

    def _on_lost(self, info: Any) -> None:
        self.stats.lost(int(info.total_count_change))

    def _on_incompatible(self, side: str, topic: str, info: Any) -> None:
        text = qos.incompatible_text(side, topic, info.last_policy_kind, self._p["input_qos"], self._p["output_qos"])
        self._qos_problem[side] = (text, time.monotonic())
        self._warn(f"qos_{side}", text)

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
        merged, reason = updated_params(self._p, new)
        if merged is None:
            return SetParametersResult(successful=False, reason=reason)
        period_changed = merged["diagnostics_period"] != self._p["diagnostics_period"]
        self._p = merged  # one reference swap: the worker reads a consistent snapshot
        if period_changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(self._p["diagnostics_period"], self._publish_diagnostics,
                                                 clock=self._steady)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _on_image(self, msg: Any) -> None:
        self.stats.arrived(self._mailbox.put(msg))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        fields = CameraInfoFields.from_msg(msg)
        if fields != self._camera:   # drivers resend one calibration with every frame: check it once
            try:
                self._camera = fields.checked()
            except InputError as exc:
                self._warn("camera_info", f"ignoring camera_info ({exc}); keeping the previous good one")

    # ------------------------------------------------------------------ worker thread

    def _handle(self, msg: Any) -> None:
        try:
            self._process(msg)
        except InputError as exc:
            self.stats.count("skipped_bad")
            self._state["last_skipped"] = str(exc)
            self._warn("input", f"skipping frame from {self._topic}: {exc}")
        except Exception as exc:  # noqa: BLE001  (the worker must outlive any one frame)
            self.stats.count("skipped_bad")
            self._state["last_skipped"] = f"unexpected {type(exc).__name__}: {exc} (see the log)"
            self._warn("bug", f"unexpected error on a frame, skipped:\n{traceback.format_exc()}", level="error")

    def _outputs_wanted(self, p: dict[str, Any]) -> dict[str, bool]:
        depth = self.pub_depth.get_subscription_count() > 0 or self.pub_info.get_subscription_count() > 0
        return {"depth": depth,
                "confidence": p["publish_confidence"] and self.pub_conf.get_subscription_count() > 0,
                "colored": p["publish_colored"] and self.pub_colored.get_subscription_count() > 0,
                "points": p["publish_points"] and self.pub_points.get_subscription_count() > 0}

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
        t: dict[str, float] = {}
        with stage_timer(t, "decode_ms"):
            rgb = convert.rgb_from_compressed(msg) if isinstance(msg, CompressedImage) else convert.rgb_from_image(msg)
        camera: CameraInfoFields | Intrinsics | None = self._camera
        if camera is None and p["fallback_fx"] > 0:
            camera = Intrinsics.centred(p["fallback_fx"], rgb.shape[1], rgb.shape[0])
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
            values, notes = diagnostics.plan_values(res, p["fallback_fx"] if self._camera is None else None)
            self._state.update(values)
            if notes:
                self._warn("calibration", "; ".join(notes))
        t.update(res.timings_ms)
        if res.anchor is not None:
            self._note_anchor(res.anchor)

        # depth and its camera_info go out first: they are what most consumers wait for
        with stage_timer(t, "depth_msg_ms"):
            first = [(self.pub_depth, convert.depth_image_msg(header, res.depth, p["depth_encoding"])),
                     (self.pub_info, convert.camera_info_msg(header, res.camera))]
        with stage_timer(t, "publish_ms"):
            for pub, out in first:
                pub.publish(out)
        latency_ms = (self.get_clock().now().nanoseconds - stamp) / 1e6
        rest: list[tuple[Any, Any]] = []
        with stage_timer(t, "depth_msg_ms"):
            if want["confidence"]:
                rest.append((self.pub_conf, convert.confidence_msg(header, res.confidence)))
            if want["colored"]:
                rest.append((self.pub_colored, convert.colored_msg(header, colorize(res.depth, p["min_depth"],
                                                                                      p["max_depth"]))))
        if res.cloud is not None:
            with stage_timer(t, "points_msg_ms"):
                rest.append((self.pub_points, convert.cloud_msg(header, res.cloud, *res.cloud.shape[:2],
                                                                p["points_rgb"])))
        with stage_timer(t, "publish_ms"):
            for pub, out in rest:
                pub.publish(out)
        self.stats.processed(latency_ms, t)
        self._state.pop("backend_note", None)    # whatever it said (an engine build) is over

    def _note_anchor(self, a: Any) -> None:
        """The scale anchor's state for /diagnostics; a change of source is said in the log."""
        before = self._state.get("scale_source")
        self._state.update(diagnostics.anchor_values(a))
        if before not in (None, a.source):   # a floor at the edge of min_inliers could flip every frame
            self._warn(f"anchor_{a.source}", f"scale anchor: {diagnostics.ANCHOR_SOURCE_CHANGE[a.source]} ({a.scale:.3f})",
                       level="info" if a.source == "floor" else "warning")

    # ------------------------------------------------------------------ logging and diagnostics

    def _warn(self, kind: str, text: str, level: str = "warning", once: bool = False) -> None:
        """Log ``text`` at ``level`` unless a message of this kind went out in the last 5 s."""
        line = self._throttle.admit(kind, text, once)
        if line is not None:
            getattr(self.get_logger(), level)(line)

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
        self._mailbox.close()
