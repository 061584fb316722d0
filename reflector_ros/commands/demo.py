"""`reflector demo`: the quick start. Node in a subprocess, a camera feed over real DDS, a preview.

It shows in one command that the whole chain works on this machine: the node starts with
the embedded (or given) model, a real RGB-D sequence (or synthetic scenes) goes in as
Image + CameraInfo, and depth, confidence, colour map, cloud and /diagnostics come back.
By default the frames are HoloLens 250 and later, which no shipped model trained on.
It writes out/demo_preview.png (input | ground truth | depth | error | confidence | cloud)
and prints the node's per-stage timings and, where the sequence has ground truth, the
metrics of `reflector eval` (train/metrics.py, the same protocol) on the depth it received:
the node runs with a depth range wide enough to publish every pixel eval scores, so the
two print the same AbsRel on the same frames.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reflector_ros.commands import Once

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hololens_office"
DEFAULT_FIRST = 250          # HoloLens frames 0-249 are the fine-tuning set; 250-372 are held out
NAMESPACE = "reflector_demo"
STATUS_NAME = "reflector_depth: pipeline"   # after the namespace: "demo/reflector_depth: pipeline"
MAX_FRAMES = 10_000
SYNTH_HW = (240, 320)
PANEL_H = 240
DEPTH_RANGE = (0.2, 6.0)     # metres: the preview's colour scale for depth and ground truth


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, action=Once,
                   help="model file (.onnx, .pt, engine); default: the embedded reflector_small.onnx")
    p.add_argument("--backend", default="auto", help="node backend (auto | onnxruntime | torch | tensorrt ...)")
    p.add_argument("--data", type=Path, default=None,
                   help=f"a manifest folder (RGB-D sequence); default: {DEFAULT_DATA} if present, else synthetic scenes")
    p.add_argument("--frames", type=int, default=30, help="frames to publish (default 30)")
    p.add_argument("--first", type=int, default=None,
                   help=f"first frame of the sequence (default {DEFAULT_FIRST} for the default HoloLens data: "
                        "the held-out frames; 0 for --data)")
    p.add_argument("--rate", type=float, default=5.0, help="publish rate in Hz (default 5)")
    p.add_argument("--preview-frames", type=int, default=4, help="rows in the preview grid (default 4)")
    p.add_argument("--out", type=Path, default=Path("out/demo_preview.png"), help="preview PNG path")
    p.add_argument("--startup-timeout", type=float, default=90.0, help="seconds to wait for the node to come up")


# ----------------------------------------------------------------------------- pure helpers

def birdseye(xyz: np.ndarray, size: tuple[int, int] = (PANEL_H, PANEL_H * 4 // 3), max_range: float | None = None) -> np.ndarray:
    """Top view (x right, z up the image) of optical-frame points, coloured by height (-y), BGR uint8."""
    import cv2

    h, w = size
    img = np.full((h, w, 3), 24, np.uint8)
    pts = xyz.reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1) & (pts[:, 2] > 0)]
    zmax = max_range or (float(np.percentile(pts[:, 2], 98)) * 1.1 if len(pts) else 5.0)
    zmax = max(zmax, 0.5)
    xmax = float(np.percentile(np.abs(pts[:, 0]), 98)) * 1.1 if len(pts) else zmax / 2
    scale = min((h - 1) / zmax, (w / 2 - 1) / max(xmax, 1e-3))  # pixels per metre, same on both axes
    for r in np.arange(1.0, zmax, 1.0):  # range rings every metre
        cv2.circle(img, (w // 2, h - 1), int(r * scale), (60, 60, 60), 1)
    if len(pts):
        u = (pts[:, 0] * scale + w / 2).astype(np.int64)
        v = (h - 1 - pts[:, 2] * scale).astype(np.int64)
        keep = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        height = -pts[keep, 1]                      # optical y points down
        lo, hi = np.percentile(height, [2, 98]) if keep.any() else (0.0, 1.0)
        norm = np.clip((height - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        colours = cv2.applyColorMap(norm.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)
        img[v[keep], u[keep]] = colours
    cv2.drawMarker(img, (w // 2, h - 3), (255, 255, 255), cv2.MARKER_TRIANGLE_UP, 10, 2)
    return img


def _panel(img_bgr: np.ndarray, label: str, height: int = PANEL_H) -> np.ndarray:
    import cv2

    w = max(1, int(round(img_bgr.shape[1] * height / img_bgr.shape[0])))
    out = cv2.resize(img_bgr, (w, height), interpolation=cv2.INTER_AREA)
    cv2.putText(out, label, (7, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(out, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


ERROR_MAX = 0.5        # the error panel's scale: |pred - gt| / gt from 0 to this


def _ramp(colormap: int) -> np.ndarray:
    """(256, 3) BGR colours of a cv2 colormap, low to high."""
    import cv2

    return cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(-1, 1), colormap)[:, 0]


def error_panel(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """|pred - gt| / gt where gt is valid, 0 (blue) .. ERROR_MAX and above (red); black: no ground truth."""
    import cv2

    ok = gt > 0
    rel = np.where(ok, np.abs(np.nan_to_num(pred, nan=0.0) - gt) / np.where(ok, gt, 1.0), 0.0)
    img = cv2.applyColorMap((np.clip(rel / ERROR_MAX, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    img[~ok] = 0
    return img


def preview_legend(width: int, depth_range: tuple[float, float], with_gt: bool) -> np.ndarray:
    """The preview's key, one strip under the grid: depth (and ground truth) in metres, the
    relative error, and confidence (stretched per frame: each panel's label gives its values)."""
    import cv2

    from reflector_ros.core.depth import colour_legend, depth_legend

    keys = [lambda w: depth_legend(w, *depth_range, title="ground truth, depth" if with_gt else "depth")]
    if with_gt:
        keys.append(lambda w: colour_legend(w, _ramp(cv2.COLORMAP_JET), 0.0, ERROR_MAX, "|error| / gt", over=True))
    keys.append(lambda w: colour_legend(w, _ramp(cv2.COLORMAP_VIRIDIS), 0.0, 1.0, "confidence (per frame)",
                                        ends=("low", "high")))
    widths = [width // len(keys)] * len(keys)
    widths[-1] += width - sum(widths)
    return np.concatenate([key(w) for key, w in zip(keys, widths)], axis=1)


def preview_row(rgb: np.ndarray, gt: np.ndarray | None, depth: np.ndarray,
                confidence: np.ndarray, xyz: np.ndarray | None, depth_range: tuple[float, float],
                caption: str = "") -> np.ndarray:
    """input | ground truth | depth | relative error | confidence | bird's-eye cloud, one frame, BGR.
    Ground truth and depth share one colour scale (the node's colormap, near = warm)."""
    import cv2

    from reflector_ros.core.depth import colorize

    # stretched between the frame's 2nd and 98th percentiles, so the ranking shows even when
    # the values span little; the label states the span
    c = np.nan_to_num(confidence.astype(np.float32), nan=0.0)
    lo, hi = (float(v) for v in np.percentile(c, [2, 98]))
    conf = cv2.applyColorMap((np.clip((c - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8),
                             cv2.COLORMAP_VIRIDIS)
    top = birdseye(xyz) if xyz is not None else np.full((PANEL_H, PANEL_H * 4 // 3, 3), 24, np.uint8)
    panels = [_panel(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), f"input {caption}")]
    if gt is not None:
        panels.append(_panel(colorize(np.where(gt > 0, gt, np.nan).astype(np.float32), *depth_range), "ground truth"))
    panels.append(_panel(colorize(depth, *depth_range), "depth"))     # the key's scale, with or without ground truth
    if gt is not None:
        panels.append(_panel(error_panel(depth, gt), f"|error| / gt, 0..{ERROR_MAX:g}"))
    panels += [_panel(conf, f"confidence {lo:.3f}-{hi:.3f}"), _panel(top, "cloud, top view")]
    return np.concatenate(panels, axis=1)


# ----------------------------------------------------------------------------- message views

def image_view(msg: Any) -> np.ndarray:
    """Numpy copy of an output Image (32FC1, bgr8, rgb8, 16UC1), honouring step and endianness."""
    dtypes = {"32FC1": (np.float32, 1), "16UC1": (np.uint16, 1), "bgr8": (np.uint8, 3), "rgb8": (np.uint8, 3)}
    dtype, ch = dtypes[msg.encoding]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    raw = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width * ch * dt.itemsize]
    arr = np.ascontiguousarray(raw).view(dt).reshape(msg.height, msg.width, ch).astype(dt.newbyteorder("="))
    arr = arr[..., 0] if ch == 1 else arr
    return arr.astype(np.float32) / 1000.0 if msg.encoding == "16UC1" else arr


def cloud_view(msg: Any) -> np.ndarray:
    """(h, w, 3) float32 xyz of an organised PointCloud2 from its field offsets."""
    offs = {f.name: f.offset for f in msg.fields}
    raw = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.row_step)[:, :msg.width * msg.point_step]
    raw = raw.reshape(msg.height, msg.width, msg.point_step)
    end = ">f4" if msg.is_bigendian else "<f4"
    return np.stack([np.ascontiguousarray(raw[..., offs[c]:offs[c] + 4]).view(end)[..., 0] for c in "xyz"], -1)


# ----------------------------------------------------------------------------- frames

def frame_source(data: Path | None, frames: int, first: int | None = None):
    """(samples, description, eval spec or None): the real sequence when present (from
    ``first``, default the held-out HoloLens frames), else synthetic scenes."""
    root = data if data is not None else DEFAULT_DATA
    if (root / "manifest.json").is_file():
        from reflector_ros.data.manifest import ManifestDataset
        start = first if first is not None else (DEFAULT_FIRST if data is None else 0)
        ds = ManifestDataset(root)
        if not 0 <= start < len(ds):
            from reflector_ros.core.errors import InputError
            raise InputError(f"--first {start}: the sequence has {len(ds)} frames")
        stop = min(len(ds), start + frames)
        samples = [ds[i] for i in range(start, stop)]
        spec = f"manifest:{root.resolve()}?frames={start}:{stop}"
        return samples, f"{ds.name}, frames {start}-{stop - 1} (with ground truth)", spec
    if data is not None:
        from reflector_ros.core.errors import InputError
        raise InputError(f"--data {data}: no manifest.json there (expected a manifest folder such as hololens_office)")
    try:
        from reflector_ros.data.synthetic import render
    except ImportError as exc:
        raise RuntimeError(f"no real sequence at {DEFAULT_DATA} and the synthetic generator is unavailable: {exc}") from exc
    from tqdm import tqdm
    samples = [render(seed, *SYNTH_HW) for seed in tqdm(range(min(frames, 10)), desc="rendering synthetic scenes", unit="scene")]
    return ([samples[i % len(samples)] for i in range(frames)],
            f"synthetic scenes ({len(samples)} rendered, with ground truth)", None)


# ----------------------------------------------------------------------------- the run

@dataclass
class Collected:
    by_stamp: dict[str, dict[int, Any]] = field(default_factory=lambda: {
        "depth": {}, "confidence": {}, "colored": {}, "points": {}})
    diagnostics: dict[str, str] | None = None


def _resolve_model(model: Path | None) -> Path:
    from reflector_ros.weights import default_model

    path = model if model is not None else default_model(".onnx")
    if not path.is_file():
        if model is None:
            raise FileNotFoundError(
                f"the embedded default model is missing ({path}). Train and export it "
                "(`reflector train`, `reflector export`) or pass --model PATH (.onnx, .pt or an engine).")
        raise FileNotFoundError(f"--model {model}: no such file")
    return path.resolve()


def _node_cmd(model: Path, backend: str) -> list[str]:
    # depth range 0..1000 m: every pixel eval scores is published (eval applies no range),
    # so the demo's metrics are reflector eval's on the same frames
    return [sys.executable, "-m", "reflector_ros.cli", "node", "--ros-args", "-r", f"__ns:=/{NAMESPACE}",
            "-p", f"model:={model}", "-p", f"backend:={backend}", "-p", "diagnostics_period:=0.5",
            "-p", "min_depth:=0.0", "-p", "max_depth:=1000.0"]


def private_node(name: str, namespace: str) -> tuple[Any, Any, Any, Any]:
    """(context, node, executor, a reliable keep-10 QoS): an rclpy node in a context of its
    own, so a tool that publishes to the node never touches rclpy's default context."""
    import rclpy
    import rclpy.executors
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, namespace=namespace, context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return context, node, executor, QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                               reliability=ReliabilityPolicy.RELIABLE)


def spin_until(executor: Any, pred: Any, timeout: float) -> bool:
    """Spin until pred() or the deadline, blocking in the wait set (a busy poll would take the
    cores the node infers on); returns pred()."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        executor.spin_once(timeout_sec=max(0.0, min(0.05, end - time.monotonic())))
    return pred()


def stop_process(proc: subprocess.Popen) -> None:
    """SIGINT (a clean rclpy shutdown), then kill if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.frames <= MAX_FRAMES:
        print(f"reflector demo: --frames must be in 1..{MAX_FRAMES}, got {args.frames}", file=sys.stderr)
        return 2
    if not 0 < args.rate <= 60:
        print(f"reflector demo: --rate must be in (0, 60] Hz, got {args.rate}", file=sys.stderr)
        return 2
    try:
        model = _resolve_model(args.model)
        samples, source, spec = frame_source(args.data, args.frames, args.first)
    except Exception as exc:  # noqa: BLE001  every refusal is a message, never a traceback
        print(f"reflector demo: {exc}", file=sys.stderr)
        return 2

    from reflector_ros.ros.fastdds import apply_default_profile
    apply_default_profile()  # the demo publishes VGA-class images too: the segment is the writer's
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    log = tempfile.NamedTemporaryFile(prefix="reflector_demo_node_", suffix=".log", delete=False)
    print(f"model:  {model}\nsource: {source}\nnode:   {' '.join(_node_cmd(model, args.backend)[2:])} (log: {log.name})")
    proc = subprocess.Popen(_node_cmd(model, args.backend), cwd=str(REPO), env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return _feed(args, samples, proc, Path(log.name), model, spec)
    finally:
        stop_process(proc)


def _feed(args: argparse.Namespace, samples: list, proc: subprocess.Popen, log_path: Path, model: Path,
          spec: str | None) -> int:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tqdm import tqdm

    context, node, executor, reliable = private_node("reflector_demo_camera", NAMESPACE)
    got = Collected()

    def keep(kind: str):
        def cb(msg: Any) -> None:
            got.by_stamp[kind][msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = msg
        return cb

    def on_diag(msg: Any) -> None:
        for st in msg.status:
            if st.name.endswith(STATUS_NAME) and st.hardware_id.startswith(f"/{NAMESPACE}/"):
                got.diagnostics = {kv.key: kv.value for kv in st.values}

    for topic, typ, kind in (("depth/image", Image, "depth"), ("depth/confidence", Image, "confidence"),
                             ("depth/colored", Image, "colored"), ("points", PointCloud2, "points")):
        node.create_subscription(typ, topic, keep(kind), reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)
    pub_img = node.create_publisher(Image, "image", reliable)
    pub_info = node.create_publisher(CameraInfo, "camera_info", reliable)


    def node_log() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])

    try:
        up = spin_until(executor, lambda: proc.poll() is not None or (
            pub_img.get_subscription_count() > 0 and node.count_publishers("depth/image") > 0), args.startup_timeout)
        if proc.poll() is not None or not up:
            why = f"exited with code {proc.returncode}" if proc.poll() is not None else f"not up after {args.startup_timeout:.0f} s"
            print(f"reflector demo: the node {why}. Its log:\n{node_log()}", file=sys.stderr)
            return 1
        spin_until(executor, lambda: False, 1.0)  # let the output subscriptions match
        period, stamps = 1.0 / args.rate, []
        due = time.monotonic()
        for i, s in enumerate(tqdm(samples, desc="frames", unit="frame")):
            now_ns = node.get_clock().now().nanoseconds
            stamps.append(now_ns)
            img, info = _frame_msgs(s, now_ns, Image)
            pub_info.publish(info)
            pub_img.publish(img)
            due += period
            spin_until(executor, lambda: time.monotonic() >= due, max(0.0, due - time.monotonic()))
            if proc.poll() is not None:
                print(f"reflector demo: the node died at frame {i}. Its log:\n{node_log()}", file=sys.stderr)
                return 1
        spin_until(executor, lambda: stamps[-1] in got.by_stamp["depth"], 5.0)
        spin_until(executor, lambda: False, 1.2)  # one more diagnostics period
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    return _report(args, samples, stamps, got, node_log, model, spec)


def _frame_msgs(s: Any, stamp_ns: int, Image: Any) -> tuple[Any, Any]:
    from reflector_ros.ros.convert import camera_info_msg

    img = Image()
    img.header.stamp.sec, img.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    img.header.frame_id = "camera_color_optical_frame"
    img.height, img.width = s.image.shape[:2]
    img.encoding, img.step = "rgb8", s.image.shape[1] * 3
    img.data.frombytes(np.ascontiguousarray(s.image).tobytes())
    return img, camera_info_msg(img.header, s.camera)


def _report(args: argparse.Namespace, samples: list, stamps: list[int], got: Collected, node_log, model: Path,
            spec: str | None) -> int:
    import cv2

    depth_of = got.by_stamp["depth"]
    answered = [i for i, st in enumerate(stamps) if st in depth_of]
    print(f"\nframes published {len(stamps)}, depth received {len(answered)}, "
          f"confidence {len(got.by_stamp['confidence'])}, colored {len(got.by_stamp['colored'])}, "
          f"points {len(got.by_stamp['points'])}")
    if not answered:
        print(f"reflector demo: no depth came back. Node log:\n{node_log()}", file=sys.stderr)
        return 1

    # scored by reflector eval's own code (evaluate_dataset) with a manifest's protocol, the
    # node's received depth standing in for the model's prediction
    from reflector_ros.core.errors import InputError
    from reflector_ros.data.registry import DATASET_DEFAULTS
    from reflector_ros.train.evaluate import evaluate_dataset

    received = {id(samples[i].image): image_view(depth_of[stamps[i]]) for i in answered}
    try:
        res = evaluate_dataset([samples[i] for i in answered], lambda rgb, _camera: received[id(rgb)],
                               max_depth=DATASET_DEFAULTS["manifest"]["max_depth"], progress=False)
    except InputError:
        res = None   # no frame with ground truth in range
    if res is not None:
        m = res["metric"]
        print(f"depth vs ground truth over {int(m['n'])} frames (reflector eval's metrics): "
              f"AbsRel {m['abs_rel']:.3f}, delta1 {m['d1']:.3f}")
        if spec is not None and len(answered) == len(samples):
            print(f"  the same with reflector eval: reflector eval --model {model} --data '{spec}'")
    if got.diagnostics:
        d = got.diagnostics
        print(f"node ({d.get('backend', '?')}): per-stage medians from /diagnostics")
        keys = [k for k in d if k.endswith("_ms")]
        for k in keys:
            print(f"  {k:<18} {d[k]:>8}")
        print(f"  input {d.get('input_rate_hz', '?')} Hz, output {d.get('output_rate_hz', '?')} Hz, "
              f"dropped {d.get('dropped_frames', '?')}")
    else:
        print("no /diagnostics from the node received")

    complete = [i for i in answered if all(stamps[i] in got.by_stamp[k] for k in ("colored", "confidence"))]
    n_rows = max(1, min(args.preview_frames, len(complete)))
    rows = []
    for i in [complete[j] for j in np.linspace(0, len(complete) - 1, n_rows).round().astype(int)] if complete else []:
        st = stamps[i]
        pts = got.by_stamp["points"].get(st)
        gt = samples[i].depth if samples[i].depth.any() else None
        rows.append(preview_row(samples[i].image, gt, image_view(depth_of[st]),
                                image_view(got.by_stamp["confidence"][st]),
                                cloud_view(pts) if pts is not None else None, DEPTH_RANGE, caption=samples[i].name))
    if rows:
        width = max(r.shape[1] for r in rows)
        key = preview_legend(width, DEPTH_RANGE, with_gt=any(s.depth.any() for s in samples))
        grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows] + [key], axis=0)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.out), grid)
        print(f"preview: {args.out} ({len(rows)} frames: input | ground truth | depth | error | confidence | "
              "cloud from above)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="reflector demo", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
