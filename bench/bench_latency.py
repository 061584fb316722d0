#!/usr/bin/env python3
"""End-to-end latency of the depth node at camera rate, against one plain rclpy image hop.

Publishes W x H rgb8 frames (+ CameraInfo) at --rate to `reflector node` in a subprocess
and times image stamp -> depth/image arrival. In the same run a plain rclpy subscriber
process times the image hop alone, which is the floor under the node's latency. Also
prints the node's per-stage medians from /diagnostics.

    .venv/bin/python bench/bench_latency.py --model path.onnx [--frames 150 --rate 30 --json]
    .venv/bin/python bench/bench_latency.py --node-param cpu_spin_wait:=true   # compare a setting
"""
from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from reflector_ros.commands.demo import private_node, spin_until, stop_process  # noqa: E402  (after the path set-up)
NAMESPACE = "reflector_bench"
STATUS_NAME = "reflector_depth: pipeline"   # after the namespace: "demo/reflector_depth: pipeline"


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def tail_bursts(frames: list[tuple[int, float]], factor: float = 2.0) -> dict:
    """Frames slower than factor x p50, grouped into runs of consecutive frame numbers.

    Why: a tail made of one long run is the machine slowing down for a while (every frame
    then waits behind a slow inference); scattered single frames are the node's own jitter.
    """
    if not frames:
        return {"threshold_ms": None, "frames": 0, "bursts": 0, "longest": 0}
    thr = factor * float(np.median([lat for _, lat in frames]))
    slow = sorted(i for i, lat in frames if lat > thr)
    runs: list[int] = []
    for k, i in enumerate(slow):
        if k and i <= slow[k - 1] + 2:   # a dropped frame between two slow ones is one run
            runs[-1] += 1
        else:
            runs.append(1)
    return {"threshold_ms": thr, "frames": len(slow), "bursts": len(runs), "longest": max(runs, default=0)}


def hop_listener(topic: str, count: int, timeout: float) -> int:
    """Plain rclpy subscriber process: stamp -> callback time of each image, as JSON on exit."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("reflector_bench_hop")
    hops: list[float] = []

    def on_image(msg: Image) -> None:
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        hops.append((time.time_ns() - sent) / 1e6)

    node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)
    print("READY", flush=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(hops) < count:
        rclpy.spin_once(node, timeout_sec=0.02)
        if select.select([sys.stdin], [], [], 0)[0]:  # the bench says it has finished publishing
            break
    print(json.dumps({"hop_ms": hops}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def bench(args: argparse.Namespace) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from tqdm import tqdm

    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.ros.convert import camera_info_msg

    from reflector_ros.weights import default_model
    from reflector_ros.ros.fastdds import apply_default_profile

    model = Path(args.model) if args.model else default_model(".onnx")
    if not model.is_file():
        raise SystemExit(f"bench_latency: model not found: {model} (pass --model PATH)")
    apply_default_profile()  # this process writes VGA images; children inherit it
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    node_cmd = [sys.executable, "-m", "reflector_ros.cli", "node", "--ros-args", "-r", f"__ns:=/{NAMESPACE}",
                "-p", f"model:={model.resolve()}", "-p", f"backend:={args.backend}", "-p", "diagnostics_period:=0.5"]
    for param in args.node_param:
        node_cmd += ["-p", param]
    node_log = tempfile.NamedTemporaryFile(prefix="reflector_bench_node_", suffix=".log", delete=False)
    node_proc = subprocess.Popen(node_cmd, cwd=str(REPO), env=env, stdout=node_log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    hop_proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--hop-listener",
                                 f"/{NAMESPACE}/image", "--frames", str(args.frames)],
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
    context, node, executor, reliable = private_node("reflector_bench_camera", NAMESPACE)
    sent_ns: dict[int, int] = {}
    latency: list[float] = []
    per_frame: list[tuple[int, float]] = []   # (frame number, ms) in arrival order
    diag: dict[str, str] = {}

    def on_depth(msg: Image) -> None:
        st = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if st in sent_ns:
            latency.append((time.time_ns() - st) / 1e6)
            per_frame.append((sent_ns[st], latency[-1]))

    def on_diag(msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name.endswith(STATUS_NAME) and s.hardware_id.startswith(f"/{NAMESPACE}/"):
                diag.clear()
                diag.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(Image, "depth/image", on_depth, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)
    pub_img = node.create_publisher(Image, "image", reliable)
    pub_info = node.create_publisher(CameraInfo, "camera_info", reliable)


    try:
        assert hop_proc.stdout is not None and hop_proc.stdout.readline().strip() == "READY"
        up = spin_until(executor, lambda: node_proc.poll() is not None or (
            pub_img.get_subscription_count() >= 2 and node.count_publishers("depth/image") > 0), args.startup_timeout)
        if node_proc.poll() is not None or not up:
            raise SystemExit("bench_latency: the node did not come up:\n" + Path(node_log.name).read_text()[-3000:])
        spin_until(executor, lambda: False, 1.0)
        h, w = args.height, args.width
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8) for _ in range(4)]
        info = camera_info_msg(Header(), Intrinsics.centred(0.8 * w, w, h))
        msgs = []
        for f in frames:
            m = Image(height=h, width=w, encoding="rgb8", step=w * 3)
            m.header.frame_id = info.header.frame_id = "camera_optical_frame"
            m.data.frombytes(f.tobytes())
            msgs.append(m)
        period, due = 1.0 / args.rate, time.monotonic()
        for i in tqdm(range(args.frames), desc="frames", unit="frame"):
            msg = msgs[i % len(msgs)]
            now = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
            info.header.stamp = msg.header.stamp
            sent_ns[now] = i
            pub_info.publish(info)
            pub_img.publish(msg)
            due += period
            spin_until(executor, lambda: time.monotonic() >= due, max(0.0, due - time.monotonic()))
        spin_until(executor, lambda: False, 2.0)  # last outputs and one more diagnostics message
        out, _ = hop_proc.communicate("stop\n", timeout=30)
        hops = json.loads(out.strip().splitlines()[-1])["hop_ms"]
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        stop_process(hop_proc)
        stop_process(node_proc)
        os.unlink(node_log.name)
    stages = {k: float(v) for k, v in diag.items() if k.endswith("_ms") and not k.startswith("latency")}
    if args.trace:
        with open(args.trace, "w") as f:
            f.write("frame,latency_ms\n" + "".join(f"{i},{lat:.3f}\n" for i, lat in sorted(per_frame)))
    return {
        "frames_published": args.frames, "rate_hz": args.rate, "size": [args.width, args.height],
        "model": str(model), "backend": diag.get("backend", args.backend),
        "depth_received": len(latency), "node_dropped": int(diag.get("dropped_frames", "0") or 0),
        "end_to_end_ms": {"p50": _pct(latency, 50), "p99": _pct(latency, 99)},
        "over_2x_p50": tail_bursts(per_frame),
        "image_hop_received": len(hops), "image_hop_ms": {"p50": _pct(hops, 50), "p99": _pct(hops, 99)},
        "node_stage_median_ms": stages,
    }


def print_table(r: dict) -> None:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:8.1f}"

    print(f"\n{r['size'][0]}x{r['size'][1]} rgb8 at {r['rate_hz']:.0f} Hz, {r['frames_published']} frames, "
          f"backend {r['backend']}")
    print(f"{'path':<38}{'received':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'image stamp -> depth/image (node)':<38}{r['depth_received']:>10}"
          f"{f(r['end_to_end_ms']['p50']):>10}{f(r['end_to_end_ms']['p99']):>10}")
    print(f"{'image stamp -> plain rclpy subscriber':<38}{r['image_hop_received']:>10}"
          f"{f(r['image_hop_ms']['p50']):>10}{f(r['image_hop_ms']['p99']):>10}")
    b = r["over_2x_p50"]
    if b["frames"]:
        print(f"{b['frames']} frames over 2 x p50 ({b['threshold_ms']:.1f} ms), in {b['bursts']} bursts, "
              f"the longest {b['longest']} frames")
    print(f"node dropped {r['node_dropped']} frames (it keeps only the newest frame while busy)")
    if r["node_stage_median_ms"]:
        print("node per-stage medians (/diagnostics):")
        for k, v in r["node_stage_median_ms"].items():
            print(f"  {k:<18}{v:8.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model file; default: the embedded reflector_small.onnx")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--startup-timeout", type=float, default=90.0)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter, e.g. cpu_spin_wait:=true (repeatable)")
    p.add_argument("--trace", metavar="CSV", help="write each frame's end-to-end latency to this CSV file")
    p.add_argument("--hop-listener", metavar="TOPIC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not (1 <= args.frames <= 100_000 and 0 < args.rate <= 1000 and 8 <= args.width <= 8192
            and 8 <= args.height <= 8192):
        p.error("need 1 <= frames <= 100000, 0 < rate <= 1000, 8 <= width, height <= 8192")
    if args.hop_listener:
        return hop_listener(args.hop_listener, args.frames, timeout=args.frames / 5 + 120)
    result = bench(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
