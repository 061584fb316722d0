"""The node's running statistics and its /diagnostics status (diagnostic_msgs, no updater).

``FrameStats`` is written by the subscription callback and the worker thread and read by
the diagnostics timer, under one lock. A restarted source (a bag loop, a driver restart,
a simulation reset) resets what belongs to the old source: latency and stage windows.
"""
from __future__ import annotations

import math
import re
import statistics
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

STATUS_NAME = "reflector_depth: pipeline"   # for a node in the root namespace; see status_name
LOST_WARN = 0.1            # fraction of the camera's images lost before the node that turns the status WARN
NO_OUTPUT_WARN_S = 10.0    # images arriving this long with no depth out (and output due) turn the status WARN
QOS_WARN_S = 30.0          # how long an incompatible-QoS event keeps the status at WARN (DDS says when a peer
                           # appears, not when it leaves)
STAGES = ("decode_ms", "rectify_ms", "preprocess_ms", "inference_ms", "anchor_ms", "postprocess_ms", "points_ms",
          "depth_msg_ms", "points_msg_ms", "publish_ms")
WINDOW = 100               # frames in the latency / stage-timing windows
RATE_WINDOW_S = 5.0


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


class FrameStats:
    """Counts, rates, latency (image stamp -> depth/image published) and stage medians."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "skipped_bad": 0, "idle": 0, "restarts": 0,
                       "waiting_info": 0, "lost": 0}
        self.in_times: deque = deque()
        self.lost_times: deque = deque()     # (monotonic time, images DDS reported lost then)
        self.skip_times: deque = deque()     # frames skipped as unusable (InputError)
        self.out_times: deque = deque()
        self.latency_ms: deque = deque(maxlen=WINDOW)
        self.stage_ms: dict[str, deque] = {s: deque(maxlen=WINDOW) for s in STAGES}
        self.last_arrival = time.monotonic()
        self.last_output = time.monotonic()

    def arrived(self, replaced: bool) -> None:
        now = time.monotonic()
        with self.lock:
            self.counts["received"] += 1
            self.counts["dropped"] += int(replaced)
            self.in_times.append(now)
            self.last_arrival = now

    def lost(self, n: int) -> None:
        """DDS reported n images lost on the way to the node (a message-lost event)."""
        with self.lock:
            self.counts["lost"] += n
            self.lost_times.append((time.monotonic(), n))

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1
            if what == "skipped_bad":
                self.skip_times.append(time.monotonic())
            elif what in ("idle", "waiting_info"):   # no output was due: the no-output clock starts again
                self.last_output = time.monotonic()

    def restarted(self) -> None:
        """A new source: the old one's latency and stage timings no longer describe it."""
        with self.lock:
            self.counts["restarts"] += 1
            self.last_output = time.monotonic()
            self.latency_ms.clear()
            for d in self.stage_ms.values():
                d.clear()

    def processed(self, latency_ms: float, stages: dict[str, float]) -> None:
        with self.lock:
            self.counts["processed"] += 1
            self.last_output = time.monotonic()
            self.out_times.append(self.last_output)
            self.latency_ms.append(latency_ms)
            for key, val in stages.items():
                if key in self.stage_ms:
                    self.stage_ms[key].append(val)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            lat = list(self.latency_ms)
            in_hz = _rate(self.in_times, now)          # also trims in_times to the window
            while self.lost_times and now - self.lost_times[0][0] > RATE_WINDOW_S:
                self.lost_times.popleft()
            lost = sum(n for _, n in self.lost_times)
            while self.skip_times and now - self.skip_times[0] > RATE_WINDOW_S:
                self.skip_times.popleft()
            return {"counts": dict(self.counts), "in_hz": in_hz, "out_hz": _rate(self.out_times, now),
                    "lost_fraction": lost / (lost + len(self.in_times)) if lost else 0.0,
                    "skip_hz": len(self.skip_times) / RATE_WINDOW_S,
                    "latency_p50": _median(lat), "latency_p95": _percentile(lat, 95),
                    "stages": {k: _median(v) for k, v in self.stage_ms.items() if v},   # stages that ran
                    "silent_s": now - self.last_arrival, "no_output_s": now - self.last_output}


@contextmanager
def stage_timer(timings_ms: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the block's wall time, in milliseconds, to ``timings_ms[stage]`` (a stage may be
    timed in several pieces, e.g. publishing before and after the latency is taken)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings_ms[stage] = timings_ms.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3


def plan_values(result: Any, fallback_fx: float | None) -> tuple[dict[str, str], list[str]]:
    """A new calibration's status values and the notes the user should hear once.
    ``result``: pipeline.FrameResult of the calibration's first frame; ``fallback_fx``:
    the focal length assumed for want of camera_info (pixels), or None."""
    notes = list(result.plan.notes)
    if fallback_fx is not None:
        notes.insert(0, f"no camera_info: fallback_fx {fallback_fx:g} px assumed, so the metric scale is only as "
                        "right as that guess")
    net = result.plan.net
    h, w = result.rgb.shape[:2]
    values = {"rectify": result.plan.rectify_state,
              "network_input": f"{net.width}x{net.height} (width x height), focal scale {net.focal_scale:.3f}",
              "image": f"{w}x{h}", "depth_image": f"{result.depth.shape[1]}x{result.depth.shape[0]}",
              "calibration": "; ".join(notes) or "ok"}
    return values, notes


def anchor_values(anchor: Any) -> dict[str, str]:
    """The scale anchor's status values; ``anchor``: core.scale_anchor.AnchorState."""
    return {"scale": f"{anchor.scale:.4f}", "scale_source": anchor.source,
            "floor_inliers": f"{anchor.inlier_fraction:.2f}"}


ANCHOR_SOURCE_CHANGE = {
    "floor": "floor in view again: scale from the camera height",
    "held": "no floor in view: holding the last floor scale",
    "model": "no floor in view for longer than scale_anchor.hold_s: using the network's own scale"}


def status_name(node_fqn: str) -> str:
    """The status name: the node's namespaced name, so two cameras' nodes (/front/…, /rear/…)
    never report under one name; "reflector_depth: pipeline" in the root namespace."""
    return f"{node_fqn.lstrip('/')}: pipeline"


def status_array(snap: dict[str, Any], state: dict[str, str], topic: str, period: float, waiting: bool,
                 idle: bool, stamp: Any, node_fqn: str,
                 qos_problem: dict[str, tuple[str, float]] | None = None) -> DiagnosticArray:
    """The node's one status: its level and message (what a user should look at first),
    the statistics of ``snap`` (FrameStats.snapshot) and the node's ``state`` values.
    ``qos_problem``: "input" / "output" -> (what an incompatible peer asked for, monotonic
    time of the event): it explains a silent input, and a subscriber that gets nothing
    (WARN for QOS_WARN_S after the event)."""
    qos_problem = qos_problem or {}
    recent = {side: text for side, (text, t) in qos_problem.items() if time.monotonic() - t < QOS_WARN_S}
    level, message = DiagnosticStatus.OK, "ok"
    lost = snap.get("lost_fraction", 0.0)      # of the camera's images over the last few seconds
    if waiting:
        level, message = DiagnosticStatus.WARN, "waiting for camera_info"
    elif snap["silent_s"] > max(3.0, 2.0 * period):
        level, message = DiagnosticStatus.WARN, f"no images on {topic} for {snap['silent_s']:.0f} s"
        if "input" in qos_problem:
            message += ": " + qos_problem["input"][0]
        elif lost > 0:
            message += (": DDS reports them lost on the way (large best-effort messages over UDP); start the camera "
                        "with the shipped Fast DDS profile, or set input_qos reliable with a reliable camera")
    elif lost >= LOST_WARN:
        level = DiagnosticStatus.WARN
        message = (f"{100 * lost:.0f} % of the images on {topic} are lost before they reach the node ({snap['in_hz']:.1f} "
                   "Hz arrive): large best-effort messages over UDP; start the camera with the shipped Fast DDS "
                   "profile (docs/fastdds.md), or set input_qos reliable with a reliable camera")
    elif snap["in_hz"] > 0 and snap.get("no_output_s", 0.0) > max(NO_OUTPUT_WARN_S, 2.0 * period) and not idle:
        level = DiagnosticStatus.WARN
        if snap.get("skip_hz", 0.0) > 0 and state.get("last_skipped"):
            why = "every frame is skipped: " + state["last_skipped"]
        else:
            why = state.get("backend_note") or "the worker is still on an earlier frame"
        message = f"images arrive on {topic} but no depth is published; {why}"
    elif state.get("frame_id") == "(empty)":
        level, message = DiagnosticStatus.WARN, (f"images on {topic} have an empty frame_id, so every output has none: "
                                                 "RViz, Nav2 and tf cannot place them")
    elif "output" in recent:
        level, message = DiagnosticStatus.WARN, recent["output"]
    elif state.get("unknown_parameters"):
        level, message = DiagnosticStatus.WARN, "unknown parameters, ignored: " + state["unknown_parameters"]
    elif state.get("calibration") not in (None, "ok", "none"):
        level, message = DiagnosticStatus.WARN, "calibration: " + state["calibration"]
    elif snap["counts"]["received"] and idle:
        message = "idle: no subscriber on any output"
    values = {**summary(snap), **state, **{f"qos_{side}": text for side, (text, _) in qos_problem.items()}}
    status = DiagnosticStatus(level=level, name=status_name(node_fqn), message=message, hardware_id=node_fqn,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = stamp
    return arr


class Throttle:
    """Each kind of message at most once per ``period`` seconds (or once ever), with a count
    of the repeats. A kind is the caller's kind plus the message's template: the text with
    every value in it blanked (numbers, hexadecimal addresses, quoted names), so no stamp,
    size, encoding name or address can defeat the throttle, while two different problems
    (an unsupported encoding, a truncated frame) are each reported."""

    VALUES = re.compile(r"0x[0-9a-fA-F]+|'[^']*'|\"[^\"]*\"|[-+]?\d+(\.\d*)?(e[-+]?\d+)?")

    def __init__(self, period: float = 5.0) -> None:
        self.period = period
        self._seen: dict[str, tuple[float, int]] = {}

    def admit(self, kind: str, text: str, once: bool = False) -> str | None:
        """The line to log now, or None while this kind is throttled."""
        key = f"{kind}:{self.VALUES.sub('#', text)}"
        now = time.monotonic()
        last, repeats = self._seen.get(key, (-math.inf, 0))
        if once and last > -math.inf or now - last < self.period:
            self._seen[key] = (last, repeats + 1)
            return None
        self._seen[key] = (now, 0)
        return text + (f" ({repeats} more of this kind since the last report)" if repeats else "")


def summary(snap: dict[str, Any]) -> dict[str, str]:
    """The statistics part of the status values."""
    c = snap["counts"]
    return {
        "input_rate_hz": f"{snap['in_hz']:.2f}", "output_rate_hz": f"{snap['out_hz']:.2f}",
        "latency_p50_ms": f"{snap['latency_p50']:.2f}", "latency_p95_ms": f"{snap['latency_p95']:.2f}",
        "received_frames": str(c["received"]), "processed_frames": str(c["processed"]),
        "dropped_frames": str(c["dropped"]), "skipped_bad_frames": str(c["skipped_bad"]),
        "idle_frames": str(c["idle"]), "source_restarts": str(c["restarts"]),
        "waiting_for_camera_info_frames": str(c["waiting_info"]), "lost_frames": str(c["lost"]),
        **{k: f"{v:.2f}" for k, v in snap["stages"].items()},
    }


