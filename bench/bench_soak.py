#!/usr/bin/env python3
"""A long run of the depth node, then scripted faults: memory, latency and backlog over time.

The node runs as users run it (`reflector node` in a subprocess, real DDS), fed by a camera
process (VGA rgb8 at 30 Hz with a distorted plumb_bob camera_info, so frames are
rectified), with every output subscribed here. The node's RSS is sampled every 10 s.

    nice -n 10 .venv/bin/python bench/bench_soak.py --minutes 10 --faults all   # soak + every fault
    .venv/bin/python bench/bench_soak.py --minutes 1                             # a short soak
    .venv/bin/python bench/bench_soak.py --minutes 0 --faults restart,signals     # faults only

Soak: RSS growth after the first minute (target < 5 %), the last minute's p50 latency
against the first minute's (within 15 %), and whether a backlog builds (latency slope,
frames answered against frames the node processed).
Faults (--faults, comma separated or `all`):
  restart     the camera process exits; a new one (new participant, stamps starting again
              from the first camera's first stamp) starts: time from its first frame to each output
  resolution  640x480 -> 1280x720 -> back with camera_info: the first frame of each size uses
              the new calibration (depth/camera_info K, output sizes, the cloud's rays)
  churn       subscribers to each output come and go every few seconds: RSS, no crash,
              and with no subscriber at all the node stays idle (laziness)
  params      min_depth, points_stride, publish_points set under load: each applies from the
              next frame; invalid values are refused with the reason
  signals     SIGINT/SIGTERM at random moments while frames are processed (and during start-up):
              exit code, time to exit, tracebacks
Writes out/soak.png (RSS, latency, output rate over time), out/soak.json and the node's log.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NODE_NAME = "reflector_depth"
STATUS_NAME = "reflector_depth: pipeline"   # after the namespace: "demo/reflector_depth: pipeline"
OUTPUTS = ("depth/image", "depth/camera_info", "depth/confidence", "depth/colored", "points")
FAULTS = ("restart", "resolution", "churn", "params", "signals")
RSS_PERIOD_S = 10.0


def calibration(width: int, height: int) -> dict[str, Any]:
    """A raw camera per resolution. The two are not scalings of each other (fx 525 at VGA,
    910 at 720p), so a stale calibration scaled to the new size is visible in K."""
    f = {(640, 480): 525.0, (1280, 720): 910.0}.get((width, height), 0.82 * width)
    cx, cy = (width - 1) / 2.0 + 3.0, (height - 1) / 2.0 - 2.0
    k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    pf = 0.95 * f
    p = [pf, 0.0, (width - 1) / 2.0, 0.0, 0.0, pf, (height - 1) / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return {"k": k, "p": p, "d": [-0.12, 0.03, 0.0005, -0.0003, 0.0], "model": "plumb_bob"}


def rectified_k(width: int, height: int) -> list[float]:
    """What depth/camera_info must state for frames of this size: P's 3x3."""
    p = calibration(width, height)["p"]
    return [p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10]]


def scene(width: int, height: int, shift: int = 0) -> np.ndarray:
    """A textured indoor-ish frame: floor and wall gradients, boxes, noise; `shift` pans it."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    xx = (xx + shift) % width
    img = np.empty((height, width, 3), np.float32)
    horizon = 0.45 * height
    wall = yy < horizon
    img[..., 0] = np.where(wall, 150 + 40 * xx / width, 90 + 120 * (yy - horizon) / (height - horizon))
    img[..., 1] = np.where(wall, 140 + 30 * yy / height, 70 + 100 * (yy - horizon) / (height - horizon))
    img[..., 2] = np.where(wall, 120 + 50 * (1 - xx / width), 50 + 60 * (yy - horizon) / (height - horizon))
    for _ in range(6):
        x0, y0 = rng.integers(0, width * 3 // 4), rng.integers(height // 3, height * 3 // 4)
        w, h = rng.integers(width // 12, width // 4), rng.integers(height // 10, height // 3)
        box = (((xx >= x0) & (xx < x0 + w)) & (yy >= y0) & (yy < y0 + h))
        img[box] = rng.integers(20, 230, 3)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- the camera process

def camera_main(argv: list[str]) -> int:
    """A camera driver: rgb8 + CameraInfo at --rate. stdin: `res W H` changes the size, EOF or
    `quit` ends it. stdout: `START offset_ns`, `FIRST wall_ns stamp_ns`, `MATCHED wall_ns` (the
    node's subscription discovered), `RES stamp_ns W H`."""
    ap = argparse.ArgumentParser(prog="bench_soak.py camera")
    ap.add_argument("--ns", required=True)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--stamp-base-ns", type=int, default=0, help="first stamp; 0 = the wall clock")
    a = ap.parse_args(argv)

    from reflector_ros.ros.fastdds import apply_default_profile
    apply_default_profile()   # the writer's segment: VGA frames over shared memory
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    rclpy.init()
    node = rclpy.create_node(f"soak_camera_{os.getpid()}")
    best_effort = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
    pub_img = node.create_publisher(Image, f"{a.ns}/image", best_effort)
    pub_info = node.create_publisher(CameraInfo, f"{a.ns}/camera_info", reliable)

    def build(width: int, height: int) -> tuple[list[Any], Any]:
        frames = []
        for shift in range(0, 48, 6):
            msg = Image()
            msg.header.frame_id = "camera_color_optical_frame"
            msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
            msg.data.frombytes(scene(width, height, shift).tobytes())
            frames.append(msg)
        cal = calibration(width, height)
        info = CameraInfo()
        info.header.frame_id = "camera_color_optical_frame"
        info.width, info.height, info.distortion_model = width, height, cal["model"]
        info.k, info.p, info.d = cal["k"], cal["p"], cal["d"]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        return frames, info

    frames, info = build(a.width, a.height)
    commands: queue.Queue[str] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("quit")

    threading.Thread(target=read_stdin, daemon=True).start()
    offset_ns = time.time_ns() - a.stamp_base_ns if a.stamp_base_ns else 0
    print(f"START {offset_ns}", flush=True)
    period, due, i, first, announce, matched = 1.0 / a.rate, time.monotonic(), 0, True, None, False
    while rclpy.ok():
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            cmd = ""
        if cmd == "quit":
            break
        if cmd.startswith("res "):
            w, h = (int(v) for v in cmd.split()[1:3])
            frames, info = build(w, h)
            announce = (w, h)
        wall_ns = time.time_ns()
        stamp_ns = wall_ns - offset_ns
        msg = frames[i % len(frames)]
        for m in (info, msg):
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        pub_info.publish(info)
        pub_img.publish(msg)
        if first:
            print(f"FIRST {wall_ns} {stamp_ns}", flush=True)
            first = False
        if not matched and pub_img.get_subscription_count() > 0:
            print(f"MATCHED {time.time_ns()}", flush=True)    # discovery found the node's subscription
            matched = True
        if announce:
            print(f"RES {stamp_ns} {announce[0]} {announce[1]}", flush=True)
            announce = None
        i += 1
        due += period
        delay = due - time.monotonic()
        if delay < -period:          # fell behind (a busy machine): skip, do not burst
            due = time.monotonic()
        time.sleep(max(0.0, delay))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


class Camera:
    """The camera process seen from the bench: start, resize, stop; its START/FIRST/MATCHED/RES lines."""

    def __init__(self, ns: str, env: dict[str, str], rate: float, width: int, height: int,
                 stamp_base_ns: int = 0) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.first_wall_ns: int | None = None
        self.first_stamp_ns: int | None = None
        self.matched_wall_ns: int | None = None
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "camera", "--ns", ns, "--rate", str(rate),
             "--width", str(width), "--height", str(height), "--stamp-base-ns", str(stamp_base_ns)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        self.offset_ns = int(self.expect("START")[0])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("FIRST "):
                self.first_wall_ns, self.first_stamp_ns = (int(v) for v in line.split()[1:3])
            elif line.startswith("MATCHED "):
                self.matched_wall_ns = int(line.split()[1])
            self.lines.put(line)

    def expect(self, word: str, timeout: float = 60.0) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith(word + " "):
                return line.split()[1:]
        raise RuntimeError(f"camera process: no {word} line (exit {self.proc.poll()})")

    def first(self, timeout: float = 60.0) -> tuple[int, int]:
        end = time.monotonic() + timeout
        while self.first_wall_ns is None or self.first_stamp_ns is None:
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(f"camera process: no first frame (exit {self.proc.poll()})")
            time.sleep(0.005)
        return self.first_wall_ns, self.first_stamp_ns

    def resize(self, width: int, height: int) -> int:
        """Returns the stamp of the first frame of the new size."""
        self.first()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"res {width} {height}\n")
        self.proc.stdin.flush()
        return int(self.expect("RES")[0])

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


# ----------------------------------------------------------------------------- the node process

def ros_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_LOCALHOST_ONLY", "1")
    env.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(101, 160)))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    return env


def start_node(ns: str, env: dict[str, str], log_path: Path, params: list[str]) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "reflector_ros.cli", "node", "--ros-args", "-r", f"__ns:={ns}"]
    for p in params:
        cmd += ["-p", p]
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# ----------------------------------------------------------------------------- the bench's ROS side

class Bench:
    """One rclpy node that subscribes the depth node's outputs and keeps a small summary of
    each message (never the messages themselves, except the last few depth/cloud pairs)."""

    def __init__(self, ns: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from reflector_ros.ros.fastdds import apply_default_profile
        apply_default_profile()
        self.rclpy = rclpy
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"soak_bench_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.ns = ns
        self.subs: dict[str, Any] = {}
        self.log: dict[str, list[dict]] = defaultdict(list)   # topic -> per-message summaries
        self.keep: dict[tuple[str, int, int], list[tuple[int, Any]]] = defaultdict(list)   # first msgs of a size
        self.offset_ns = 0                                      # the current camera's stamp -> wall offset
        self.diag: list[dict] = []
        self.rss: list[tuple[float, float]] = []
        self.t0 = time.time()
        self.proc: subprocess.Popen | None = None
        self._next_rss = 0.0
        from diagnostic_msgs.msg import DiagnosticArray
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, self.qos(depth=20))

    @staticmethod
    def qos(depth: int = 5, reliable: bool = True):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)

    def _types(self) -> dict[str, Any]:
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        return {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/confidence": Image,
                "depth/colored": Image, "points": PointCloud2}

    def subscribe(self, topic: str) -> None:
        if topic in self.subs:
            return

        def cb(msg: Any, topic: str = topic) -> None:
            self._on_output(topic, msg)

        self.subs[topic] = self.node.create_subscription(self._types()[topic], f"{self.ns}/{topic}", cb, self.qos())

    def unsubscribe(self, topic: str) -> None:
        sub = self.subs.pop(topic, None)
        if sub is not None:
            self.node.destroy_subscription(sub)

    def _on_output(self, topic: str, msg: Any) -> None:
        wall = time.time()
        s = stamp_ns(msg.header.stamp)
        rec: dict[str, Any] = {"t": wall - self.t0, "stamp": s, "lat_ms": (wall * 1e9 - (s + self.offset_ns)) / 1e6}
        if topic == "depth/camera_info":
            rec.update(w=msg.width, h=msg.height, k=[float(v) for v in msg.k])
        else:
            rec.update(w=msg.width, h=msg.height)
        if topic == "depth/image":
            if msg.encoding == "32FC1" and msg.step == msg.width * 4:
                arr = np.frombuffer(msg.data, np.float32).reshape(msg.height, msg.width)
                rec["dmin"] = float(np.nanmin(arr)) if np.isfinite(arr).any() else math.nan
                sub = arr[::4, ::4]
                rec["dmed"] = float(np.nanmedian(sub)) if np.isfinite(sub).any() else math.nan
        if topic in ("depth/image", "points") and len(self.keep[(topic, msg.width, msg.height)]) < 4:
            self.keep[(topic, msg.width, msg.height)].append((s, msg))
        self.log[topic].append(rec)

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith(STATUS_NAME) and status.hardware_id == f"{self.ns}/{NODE_NAME}":
                vals = {kv.key: kv.value for kv in status.values}
                vals["t"] = time.time() - self.t0
                vals["message"] = status.message
                self.diag.append(vals)

    def spin(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until is not None and until():
                return True
            self.executor.spin_once(timeout_sec=0.01)
            self._sample_rss()
        return bool(until()) if until is not None else True

    def _sample_rss(self) -> None:
        now = time.time() - self.t0
        if self.proc is not None and now >= self._next_rss:
            mb = rss_mb(self.proc.pid)
            if mb is not None:
                self.rss.append((now, mb))
            self._next_rss = now + RSS_PERIOD_S

    def since(self, topic: str, t: float) -> list[dict]:
        return [r for r in self.log[topic] if r["t"] >= t]

    def now(self) -> float:
        return time.time() - self.t0

    def set_parameters(self, **values: Any) -> list[tuple[bool, str]]:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"{self.ns}/{NODE_NAME}/set_parameters")
        try:
            assert self.spin(15, client.service_is_ready), "set_parameters service not available"
            req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
            future = client.call_async(req)
            assert self.spin(15, future.done), "set_parameters did not answer"
            return [(r.successful, r.reason) for r in future.result().results]
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


# ----------------------------------------------------------------------------- figures

def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def soak_figures(b: Bench, t_start: float, t_end: float) -> dict:
    depth = [r for r in b.log["depth/image"] if t_start <= r["t"] <= t_end]
    minute = 60.0
    first = [r["lat_ms"] for r in depth if r["t"] < t_start + minute]
    last = [r["lat_ms"] for r in depth if r["t"] >= t_end - minute]
    after = [(r["t"], r["lat_ms"]) for r in depth if r["t"] >= t_start + minute]
    slope = float(np.polyfit([t for t, _ in after], [v for _, v in after], 1)[0] * 60) if len(after) > 10 else math.nan
    rss = [(t, mb) for t, mb in b.rss if t_start <= t <= t_end]
    base = next((mb for t, mb in rss if t >= t_start + minute), None)
    growth = 100.0 * (rss[-1][1] - base) / base if base and rss else math.nan
    whole = 100.0 * (rss[-1][1] - rss[0][1]) / rss[0][1] if rss else math.nan
    diags = [d for d in b.diag if t_start <= d["t"] <= t_end]
    processed = (int(diags[-1]["processed_frames"]) - int(diags[0]["processed_frames"])) if len(diags) > 1 else None
    received = {topic: len([r for r in b.log[topic] if t_start <= r["t"] <= t_end]) for topic in OUTPUTS}
    seconds = t_end - t_start
    return {
        "seconds": round(seconds, 1),
        "latency_ms": {"first_minute_p50": pct(first, 50), "last_minute_p50": pct(last, 50),
                       "last_vs_first_p50_pct": 100.0 * (pct(last, 50) / pct(first, 50) - 1) if first and last else None,
                       "p95_first_minute": pct(first, 95), "p95_last_minute": pct(last, 95),
                       "slope_ms_per_min_after_first_minute": slope},
        "rss_mb": {"at_start": rss[0][1] if rss else None, "after_first_minute": base,
                   "at_end": rss[-1][1] if rss else None, "max": max((mb for _, mb in rss), default=None),
                   "growth_after_first_minute_pct": growth, "growth_whole_run_pct": whole},
        "rates_hz": {topic: n / seconds for topic, n in received.items()},
        "input_rate_hz": float(diags[-1]["input_rate_hz"]) if diags else None,
        "node_processed": processed, "bench_received_depth": received["depth/image"],
        "node_dropped_frames": int(diags[-1]["dropped_frames"]) - int(diags[0]["dropped_frames"]) if len(diags) > 1 else None,
        "node_latency_p50_ms_last": float(diags[-1]["latency_p50_ms"]) if diags else None,
    }


# ----------------------------------------------------------------------------- faults

def fault_restart(b: Bench, cam: Camera, make_camera: Callable[[int], Camera], rounds: int = 3) -> tuple[dict, Camera]:
    """The camera process exits; a new one (new participant) starts with stamps starting again."""
    base_stamp = cam.first()[1]
    results = []
    for _ in range(rounds):
        cam.stop()
        b.spin(2.0)                                   # let the last outputs drain
        t_gap = b.now()
        b.spin(1.0)
        quiet = all(not b.since(t, t_gap) for t in OUTPUTS)
        cam = make_camera(base_stamp)                 # stamps start again at the first camera's first stamp
        b.offset_ns = cam.offset_ns
        first_wall_ns, _ = cam.first()
        t_first = first_wall_ns / 1e9 - b.t0
        b.spin(10.0, lambda: all(b.since(t, t_first) for t in OUTPUTS))
        resume = {t: (b.since(t, t_first)[0]["t"] - t_first) if b.since(t, t_first) else None for t in OUTPUTS}
        matched = (cam.matched_wall_ns - first_wall_ns) / 1e9 if cam.matched_wall_ns else None
        results.append({"quiet_while_stopped": quiet, "resume_s": resume, "camera_matched_node_s": matched})
        b.spin(5.0)                                   # the new camera runs a while before the next restart
    worst = [max((v for v in r["resume_s"].values() if v is not None), default=math.inf) for r in results]
    return {"rounds": results, "resume_worst_s": worst,
            "camera_matched_node_s": [r["camera_matched_node_s"] for r in results], "all_outputs_resumed": all(
        all(v is not None for v in r["resume_s"].values()) for r in results)}, cam


def _cloud_check(b: Bench, stamp: int, width: int, height: int) -> float | None:
    """Largest |x - (u - cx) z / fx| (m) of the cloud against its own depth at this stamp, with the
    calibration of this size: a stale ray table shows up here."""
    depth = next((m for s, m in b.keep[("depth/image", width, height)] if s == stamp), None)
    cloud = next((m for s, m in b.keep[("points", width, height)] if s == stamp), None)
    if depth is None or cloud is None or (cloud.width, cloud.height) != (width, height):
        return None
    z = np.frombuffer(bytes(depth.data), np.float32).reshape(height, width)
    offs = {f.name: f.offset for f in cloud.fields}
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(height, width, cloud.point_step)
    x = raw[..., offs["x"]:offs["x"] + 4].copy().view("<f4")[..., 0]
    k = rectified_k(width, height)
    u = np.arange(width, dtype=np.float64)[None, :]
    want = (u - k[2]) * z / k[0]
    ok = np.isfinite(z) & np.isfinite(x)
    return float(np.abs(x[ok] - want[ok]).max()) if ok.any() else None


def fault_resolution(b: Bench, cam: Camera) -> dict:
    steps = []
    for w, h in ((1280, 720), (640, 480)):
        t_cmd = b.now()
        b.keep.clear()
        change = cam.resize(w, h)
        b.spin(15.0, lambda: all(any(r["stamp"] >= change for r in b.since(t, t_cmd)) for t in OUTPUTS))
        b.spin(3.0)
        new = {t: [r for r in b.since(t, t_cmd) if r["stamp"] >= change] for t in OUTPUTS}
        wrong_size = sum(1 for t in OUTPUTS for r in new[t] if (r["w"], r["h"]) != (w, h))
        want_k = rectified_k(w, h)
        wrong_k = sum(1 for r in new["depth/camera_info"] if not np.allclose(r["k"], want_k, atol=1e-6))
        old_after = sum(1 for t in OUTPUTS for r in b.since(t, t_cmd) if r["stamp"] < change and (r["w"], r["h"]) == (w, h))
        firsts = sorted({s for s, _ in b.keep[("points", w, h)]} & {s for s, _ in b.keep[("depth/image", w, h)]})
        ray_err = next((e for e in (_cloud_check(b, s, w, h) for s in firsts) if e is not None), None)
        resume = min((r["t"] for r in new["depth/image"]), default=math.nan) - (change / 1e9 + cam.offset_ns / 1e9 - b.t0)
        steps.append({"to": f"{w}x{h}", "frames_after_change": len(new["depth/image"]),
                      "outputs_with_wrong_size": wrong_size, "camera_info_with_wrong_k": wrong_k,
                      "old_frames_with_new_size": old_after, "first_output_s": resume,
                      "cloud_vs_depth_max_err_m": ray_err,
                      "first_camera_info_k": new["depth/camera_info"][0]["k"] if new["depth/camera_info"] else None,
                      "expected_k": want_k})
    return {"steps": steps}


def fault_churn(b: Bench, seconds: float, rng: random.Random) -> dict:
    """Subscribers come and go every 1-4 s per output; a 5-s window with none at all checks laziness."""
    assert b.proc is not None
    rss_before = rss_mb(b.proc.pid)
    toggles = 0
    end = time.monotonic() + seconds
    nxt = {t: time.monotonic() + rng.uniform(1, 4) for t in OUTPUTS}
    while time.monotonic() < end:
        for t in OUTPUTS:
            if time.monotonic() >= nxt[t]:
                (b.unsubscribe if t in b.subs else b.subscribe)(t)
                toggles += 1
                nxt[t] = time.monotonic() + rng.uniform(1, 4)
        b.spin(0.1)
    # laziness: nobody listening -> the node decodes nothing and publishes nothing
    for t in OUTPUTS:
        b.unsubscribe(t)
    b.spin(3.0)                                           # unmatching takes a moment
    d0 = b.diag[-1]
    b.spin(5.0)
    d1 = b.diag[-1]
    idle = {"processed_delta": int(d1["processed_frames"]) - int(d0["processed_frames"]),
            "idle_frames_delta": int(d1["idle_frames"]) - int(d0["idle_frames"]), "message": d1.get("message")}
    for t in OUTPUTS:
        b.subscribe(t)
    t_back = b.now()
    resumed = b.spin(20.0, lambda: all(b.since(t, t_back) for t in OUTPUTS))
    b.spin(5.0)
    rss_after = rss_mb(b.proc.pid)
    return {"seconds": seconds, "toggles": toggles, "rss_before_mb": rss_before, "rss_after_mb": rss_after,
            "idle_window": idle, "resumed_after": resumed, "node_alive": b.proc.poll() is None}


def fault_params(b: Bench) -> dict:
    """Each change applies from the next frame: every output stamped after the call's answer obeys."""
    out: dict[str, Any] = {}
    recent = [r["dmed"] for r in b.log["depth/image"][-20:] if not math.isnan(r.get("dmed", math.nan))]
    min_depth = round(float(np.median(recent)), 3) if recent else 1.0   # half the pixels were nearer

    def applied(topic: str, ok: Callable[[dict], bool], seconds: float = 4.0) -> dict:
        t_set = b.now()
        stamp_set = int((time.time()) * 1e9) - b.offset_ns
        b.spin(seconds)
        after = [r for r in b.since(topic, t_set) if r["stamp"] > stamp_set]
        bad = [r for r in after if not ok(r)]
        return {"frames_after": len(after), "violations": len(bad)}

    before = [r for r in b.log["depth/image"][-20:] if r.get("dmin", math.nan) < min_depth]
    res = b.set_parameters(min_depth=min_depth)
    out["min_depth"] = {"value": min_depth, "accepted": res[0], "frames_before_with_nearer_depth": len(before),
                        **applied("depth/image", lambda r: math.isnan(r["dmin"]) or r["dmin"] >= min_depth - 1e-6)}
    res = b.set_parameters(points_stride=4)
    out["points_stride"] = {"value": 4, "accepted": res[0],
                            **applied("points", lambda r: (r["w"], r["h"]) == (640 // 4, 480 // 4))}
    res = b.set_parameters(publish_points=False)
    t_off = b.now()
    out["publish_points"] = {"value": False, "accepted": res[0], **applied("points", lambda r: False)}
    out["publish_points"]["depth_frames_meanwhile"] = len(b.since("depth/image", t_off))
    invalid = {"min_depth=-1.0": dict(min_depth=-1.0), "points_stride=0": dict(points_stride=0),
               "min_depth=50.0 (> max_depth)": dict(min_depth=50.0), "publish_points='maybe'": dict(publish_points="maybe"),
               "backend=torch (start-up only)": dict(backend="torch")}
    out["invalid"] = {name: b.set_parameters(**vals)[0] for name, vals in invalid.items()}
    res = b.set_parameters(min_depth=0.2, points_stride=1, publish_points=True)
    t_back = b.now()
    back = b.spin(10.0, lambda: any((r["w"], r["h"]) == (640, 480) for r in b.since("points", t_back)))
    out["restored"] = {"accepted": all(ok for ok, _ in res), "full_cloud_again": back}
    return out


def fault_signals(args: argparse.Namespace, env: dict[str, str], out_dir: Path, rng: random.Random) -> dict:
    """Fresh nodes, each ended by SIGINT or SIGTERM at a random moment: while frames are being
    processed (the signal goes 0-60 ms after an answer, when the next frame has just started),
    and during start-up."""
    ns = "/soak_signals"
    b = Bench(ns)
    cam = Camera(ns, env, args.rate, 640, 480)
    b.offset_ns = cam.offset_ns
    for t in OUTPUTS:
        b.subscribe(t)
    runs = []
    plan = [("running", s) for s in [signal.SIGINT, signal.SIGTERM] * (args.signal_rounds // 2)] + \
           [("start-up", signal.SIGINT), ("start-up", signal.SIGTERM)]
    try:
        for i, (when, sig) in enumerate(plan):
            log_path = out_dir / "soak_signals" / f"node_{i}.log"
            t_popen = time.monotonic()
            proc = start_node(ns, env, log_path, node_params(args))
            b.proc = proc
            if when == "running":
                t_up = b.now()
                if not b.spin(90.0, lambda: bool(b.since("depth/image", t_up))):
                    runs.append({"when": when, "signal": sig.name, "error": "no output"})
                    proc.kill()
                    proc.wait()
                    continue
                b.spin(rng.uniform(0.5, 3.0))
                n = len(b.log["depth/image"])
                b.spin(10.0, lambda: len(b.log["depth/image"]) > n)
                time.sleep(rng.uniform(0.0, 0.06))
            else:
                time.sleep(rng.uniform(0.3, 4.0))
            t_sig = time.monotonic()
            t_sig_b = b.now()
            proc.send_signal(sig)
            code = None
            while time.monotonic() - t_sig < 15:
                b.spin(0.01)
                code = proc.poll()
                if code is not None:
                    break
            took = time.monotonic() - t_sig
            if code is None:
                proc.kill()
                proc.wait()
            text = log_path.read_text(errors="replace")
            in_flight = any(r["t"] > t_sig_b for r in b.log["depth/image"])
            runs.append({"when": when, "signal": sig.name, "at_s_after_start": round(t_sig - t_popen, 2),
                         "exit_code": code, "exit_s": round(took, 3), "traceback": "Traceback" in text,
                         "said_shutting_down": f"{sig.name}: shutting down" in text,
                         "frame_in_flight_published": in_flight})
            b.spin(1.0)
    finally:
        cam.stop()
        b.close()
    running = [r for r in runs if r.get("when") == "running" and "exit_s" in r]
    return {"runs": runs, "running_exit_s_max": max((r["exit_s"] for r in running), default=None),
            "running_exit_s_median": float(np.median([r["exit_s"] for r in running])) if running else None,
            "running_all_clean": all(r["exit_code"] == 0 and not r["traceback"] for r in running)}


# ----------------------------------------------------------------------------- plot

def plot(b: Bench, phases: list[tuple[str, float, float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    t_min = [r["t"] / 60 for r in b.log["depth/image"]]
    lat = [r["lat_ms"] for r in b.log["depth/image"]]
    ax = axes[0]
    if b.rss:
        ax.plot([t / 60 for t, _ in b.rss], [mb for _, mb in b.rss], "o-", ms=3, color="tab:blue")
    ax.set_ylabel("node RSS (MB)")
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(t_min, lat, ".", ms=1.5, alpha=0.35, color="tab:gray", label="per frame")
    if len(lat) > 30:
        w = 60
        roll = [float(np.median(lat[max(0, i - w):i + 1])) for i in range(len(lat))]
        ax.plot(t_min, roll, "-", color="tab:red", lw=1.2, label=f"rolling p50 ({w} frames)")
    ax.set_ylabel("stamp -> depth/image\nreceived (ms)")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax = axes[2]
    for topic in OUTPUTS:
        ts = np.array([r["t"] for r in b.log[topic]])
        if ts.size:
            edges = np.arange(0, ts.max() + 10, 10.0)
            counts, _ = np.histogram(ts, edges)
            ax.step(edges[:-1] / 60, counts / 10.0, where="post", lw=1, label=topic)
    ax.set_ylabel("outputs received (Hz)")
    ax.set_xlabel("minutes")
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    colours = {"restart": "tab:orange", "resolution": "tab:green", "churn": "tab:purple", "params": "tab:brown"}
    top = axes[0].get_ylim()[1]
    for i, (name, t0, t1) in enumerate(p for p in phases if p[0] in colours):
        for a in axes:
            a.axvspan(t0 / 60, t1 / 60, color=colours[name], alpha=0.12)
        axes[0].annotate(name, ((t0 + t1) / 120, top), xytext=(0, 2 + 10 * (i % 2)), textcoords="offset points",
                         ha="center", va="bottom", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def node_params(args: argparse.Namespace) -> list[str]:
    params = [f"backend:={args.backend}", "diagnostics_period:=1.0"]
    if args.model:
        params.append(f"model:={args.model}")
    return params + list(args.node_param)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["camera"]:
        return camera_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0, help="steady soak length (0 = none)")
    ap.add_argument("--faults", default="", help=f"comma separated: {', '.join(FAULTS)}, or all")
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--model", default="", help="model file; empty = the embedded default model")
    ap.add_argument("--node-param", action="append", default=[], help="extra node parameter NAME:=VALUE")
    ap.add_argument("--churn-seconds", type=float, default=60.0)
    ap.add_argument("--signal-rounds", type=int, default=8, help="signals while running (half SIGINT, half SIGTERM)")
    ap.add_argument("--out", type=Path, default=REPO / "out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    faults = list(FAULTS) if args.faults == "all" else [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        ap.error(f"unknown faults: {', '.join(sorted(unknown))}")
    rng = random.Random(args.seed)
    env = ros_env()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY", "ROS_DOMAIN_ID",
                                           "RMW_IMPLEMENTATION")})
    args.out.mkdir(parents=True, exist_ok=True)
    ns = "/soak"
    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                               "domain_id": env["ROS_DOMAIN_ID"], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    phases: list[tuple[str, float, float]] = []
    b = Bench(ns)
    node_log = args.out / "soak_node.log"
    proc = start_node(ns, env, node_log, node_params(args))
    b.proc = proc
    cam = None
    try:
        for t in OUTPUTS:
            b.subscribe(t)
        cam = Camera(ns, env, args.rate, 640, 480)
        b.offset_ns = cam.offset_ns
        t_up = b.now()
        if not b.spin(120.0, lambda: all(b.log[t] for t in OUTPUTS)):
            raise RuntimeError("the node never answered on every output:\n" + node_log.read_text(errors="replace"))
        print(f"node up, every output answered after {b.now() - t_up:.1f} s", flush=True)
        if args.minutes > 0:
            t0 = b.now()
            end = t0 + args.minutes * 60
            while b.now() < end:
                b.spin(min(30.0, end - b.now()))
                d = b.diag[-1] if b.diag else {}
                rss = b.rss[-1][1] if b.rss else float("nan")
                print(f"  {(b.now() - t0) / 60:5.1f} min  RSS {rss:7.1f} MB  node p50 {d.get('latency_p50_ms', '?')} ms  "
                      f"in {d.get('input_rate_hz', '?')} Hz  out {d.get('output_rate_hz', '?')} Hz", flush=True)
            phases.append(("soak", t0, b.now()))
            results["soak"] = soak_figures(b, t0, b.now())
        make_camera = lambda base: Camera(ns, env, args.rate, 640, 480, stamp_base_ns=base)  # noqa: E731
        for fault in faults:
            if fault == "signals":
                continue
            t0 = b.now()
            print(f"fault: {fault}", flush=True)
            if fault == "restart":
                results["restart"], cam = fault_restart(b, cam, make_camera)
            elif fault == "resolution":
                results["resolution"] = fault_resolution(b, cam)
            elif fault == "churn":
                results["churn"] = fault_churn(b, args.churn_seconds, rng)
            elif fault == "params":
                results["params"] = fault_params(b)
            phases.append((fault, t0, b.now()))
        alive = proc.poll() is None
        results["node_alive_at_end"] = alive
    finally:
        if cam is not None:
            cam.stop()
        code = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log_text = node_log.read_text(errors="replace")
        results["node_exit_code"] = code
        results["node_log_tracebacks"] = log_text.count("Traceback")
        results["node_log_warnings"] = sum(1 for ln in log_text.splitlines() if "[WARN]" in ln or "[ERROR]" in ln)
        results["phases"] = phases
        title = (f"reflector_depth soak: VGA rgb8 at {args.rate:.0f} Hz, every output subscribed, "
                 f"{args.backend}; faults: {', '.join(f for f in faults if f != 'signals') or 'none'}")
        plot(b, phases, args.out / "soak.png", title)
        b.close()
    if "signals" in faults:
        print("fault: signals", flush=True)
        results["signals"] = fault_signals(args, env, args.out, rng)
    (args.out / "soak.json").write_text(json.dumps(results, indent=2, default=str))
    report(results)
    print(f"\nwrote {args.out / 'soak.png'}, {args.out / 'soak.json'}, {node_log}")
    return 0


def _f(v: Any, fmt: str = ".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def report(r: dict) -> None:
    print()
    if "soak" in r:
        s = r["soak"]
        lat, rss = s["latency_ms"], s["rss_mb"]
        print(f"soak ({s['seconds'] / 60:.1f} min):")
        print(f"  RSS {_f(rss['after_first_minute'])} MB after the first minute -> {_f(rss['at_end'])} MB at the end: "
              f"{_f(rss['growth_after_first_minute_pct'], '+.2f')} % (target < 5 %); max {_f(rss['max'])} MB; "
              f"{_f(rss['at_start'])} MB at the start ({_f(rss['growth_whole_run_pct'], '+.2f')} % over the run)")
        print(f"  latency p50 first minute {_f(lat['first_minute_p50'])} ms, last minute {_f(lat['last_minute_p50'])} ms: "
              f"{_f(lat['last_vs_first_p50_pct'], '+.1f')} % (target within 15 %); p95 {_f(lat['p95_first_minute'])} -> "
              f"{_f(lat['p95_last_minute'])} ms")
        print(f"  backlog: latency slope after the first minute {_f(lat['slope_ms_per_min_after_first_minute'], '+.2f')} "
              f"ms/min; node processed {s['node_processed']}, bench received {s['bench_received_depth']} depth images; "
              f"node dropped {s['node_dropped_frames']} of the input (latest frame wins)")
        print("  rates (Hz): input " + _f(s["input_rate_hz"]) + ", " +
              ", ".join(f"{t} {v:.2f}" for t, v in s["rates_hz"].items()))
    if "restart" in r:
        x = r["restart"]
        print(f"camera restart x{len(x['rounds'])}: worst output resumed {', '.join(_f(v, '.2f') for v in x['resume_worst_s'])} s "
              f"after the new camera's first frame (target < 1 s); its publisher matched the node's subscription "
              f"{', '.join(_f(v, '.2f') for v in x['camera_matched_node_s'])} s after that frame; quiet while stopped: "
              f"{all(rr['quiet_while_stopped'] for rr in x['rounds'])}")
    if "resolution" in r:
        for st in r["resolution"]["steps"]:
            print(f"resolution -> {st['to']}: {st['frames_after_change']} frames; wrong size {st['outputs_with_wrong_size']}, "
                  f"wrong K {st['camera_info_with_wrong_k']}, old frames at the new size {st['old_frames_with_new_size']}; "
                  f"first output {_f(st['first_output_s'], '.2f')} s after the first new frame; cloud vs depth "
                  f"{_f(st['cloud_vs_depth_max_err_m'], '.2e')} m")
    if "churn" in r:
        c = r["churn"]
        print(f"subscriber churn {c['seconds']:.0f} s, {c['toggles']} toggles: RSS {_f(c['rss_before_mb'])} -> "
              f"{_f(c['rss_after_mb'])} MB; no subscriber for 5 s: processed +{c['idle_window']['processed_delta']}, "
              f"idle +{c['idle_window']['idle_frames_delta']} ('{c['idle_window']['message']}'); resumed: "
              f"{c['resumed_after']}; alive: {c['node_alive']}")
    if "params" in r:
        p = r["params"]
        for name in ("min_depth", "points_stride", "publish_points"):
            q = p[name]
            print(f"param {name}={q['value']}: accepted {q['accepted'][0]}; {q['frames_after']} frames after, "
                  f"{q['violations']} not obeying" + (f" (before: {q['frames_before_with_nearer_depth']} of the last 20 frames "
                  f"had depth nearer than that)" if name == "min_depth" else "") +
                  (f" ({q['depth_frames_meanwhile']} depth images meanwhile)" if name == "publish_points" else ""))
        for name, (ok, reason) in p["invalid"].items():
            print(f"param {name}: {'ACCEPTED (wrong)' if ok else 'refused'}: {reason}")
        print(f"params restored: {p['restored']}")
    if "signals" in r:
        sg = r["signals"]
        for run in sg["runs"]:
            print(f"signal {run.get('signal')} {run.get('when')}: " + (run["error"] if "error" in run else
                  f"at {run['at_s_after_start']} s, exit {run['exit_code']} in {run['exit_s']:.2f} s, traceback "
                  f"{run['traceback']}, frame in flight published {run['frame_in_flight_published']}"))
        print(f"signals while running: exit median {_f(sg['running_exit_s_median'], '.2f')} s, max "
              f"{_f(sg['running_exit_s_max'], '.2f')} s (target < 2 s), all clean: {sg['running_all_clean']}")
    print(f"node: exit {r.get('node_exit_code')} after the run, {r.get('node_log_tracebacks')} tracebacks, "
          f"{r.get('node_log_warnings')} warning/error lines in its log")


if __name__ == "__main__":
    sys.exit(main())
