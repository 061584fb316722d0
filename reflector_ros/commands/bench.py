"""`reflector bench`: per-stage median latency of every backend that runs here, through the
node's own frame pipeline (reflector_ros.pipeline).

Times a camera frame (default 640x480, fx = 0.9 x width) end to end: rectification-free
preprocess, inference, postprocess, and the packed xyz+rgb cloud with the node's default
filters, on the device where the backend can. Several models (``--model`` and ``--arch``,
repeatable) run in the same process one after the other, so they compare side by side on
the same machine state: absolute figures differ between machines, ratios much less.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("preprocess", "inference", "postprocess", "points")
CANDIDATES = ("onnxruntime-cpu", "torch-cpu", "torch-cuda", "tensorrt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, action="append", default=[],
                   help="X.onnx or X.pt (the sibling with the other suffix is used where needed); repeatable; "
                        "default: the embedded model")
    p.add_argument("--arch", choices=("lite0", "small", "base"), action="append", default=[],
                   help="also bench a random-weight model of this architecture (latency does not depend on the "
                        "weights); repeatable. 'small' with the default --bins and --input-size is the model "
                        "shipped before v2")
    p.add_argument("--canonical", action="store_true",
                   help="--arch models follow the camera (input_mode canonical, f_c 280) instead of a fixed size")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=(256, 320),
                   help="network input size for --arch (nominal size with --canonical)")
    p.add_argument("--bins", type=int, default=32, help="bins of the --arch models")
    p.add_argument("--backends", nargs="+", choices=CANDIDATES, default=list(CANDIDATES),
                   help="backends to time (default: every one; those unavailable here are reported and skipped)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = automatic: the physical cores)")
    p.add_argument("--reps", type=int, default=50, help="timed frames per model and backend; medians are printed (default: 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed frames first (default: 5)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(640, 480), help="camera frame size")
    p.add_argument("--fx", type=float, default=None, help="camera focal length in pixels (default 0.9 x width)")
    p.add_argument("--engine-dir", type=Path, default=None,
                   help="TensorRT engine cache (default: engines/ or $REFLECTOR_ENGINE_DIR)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _random_model(arch: str, args: argparse.Namespace, out_dir: Path) -> Path:
    """Random weights through the real model and exporter: latency does not depend on training."""
    import torch

    from reflector_ros.meta import ModelMeta
    from reflector_ros.model.export import export_onnx
    from reflector_ros.model.reflector import build_model, save_checkpoint

    torch.manual_seed(0)
    kw: dict[str, Any] = {"arch": arch, "input_height": args.input_size[0], "input_width": args.input_size[1],
                          "n_bins": args.bins}
    if args.canonical:
        kw.update(input_mode="canonical", focal_canonical=280.0, max_input_pixels=204800)
    meta = ModelMeta(**kw)
    model = build_model(meta).eval()
    stem = f"random_{arch}"
    save_checkpoint(out_dir / f"{stem}.pt", model, meta)
    return Path(export_onnx(model, meta, out_dir, stem=stem)["fused"])


def _cut(text: str, n: int) -> str:
    """text in n characters: its start and its end, the middle elided."""
    return text if len(text) <= n else text[:n // 2 - 1] + "…" + text[-(n - n // 2):]


def _models(args: argparse.Namespace, tmp: Path) -> list[tuple[Path, str]]:
    """(model file, label) for every model to bench, in the order given."""
    from reflector_ros.weights import default_model

    names = [m.name for m in args.model]
    # the file name, or more of the path where two models share one
    out = [(m, m.name if names.count(m.name) == 1 else str(m)) for m in args.model]
    for arch in args.arch:
        print(f"bench: building a random-weight '{arch}' model", file=sys.stderr)
        out.append((_random_model(arch, args, tmp), f"random-weight {arch}"))
    if not out:
        out.append((default_model(".onnx"), "embedded default model"))
    return out


def bench_backend(backend: Any, size: tuple[int, int], fx: float, reps: int, warmup: int) -> dict[str, Any]:
    """Median per-stage ms over ``reps`` frames after ``warmup`` frames, through DepthPipeline
    with the node's default outputs (depth 0.2-10 m, xyz+rgb cloud into a reused buffer)."""
    from tqdm import tqdm

    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.pipeline import CloudSettings, DepthPipeline, FrameSettings

    w, h = size
    camera = Intrinsics.centred(fx, w, h)
    pipeline = DepthPipeline(backend)
    settings = FrameSettings(min_depth=0.2, max_depth=10.0, cloud=CloudSettings(rgb=True))
    buffers: dict[str, np.ndarray] = {}

    def alloc(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in buffers or buffers[name].shape != shape:
            buffers[name] = np.empty(shape, np.float32)
        return buffers[name]

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    for i in range(warmup):
        pipeline.process(frames[i % 4], camera, settings, alloc=alloc)
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals: list[float] = []
    net = pipeline.plan(camera, w, h).net
    for i in tqdm(range(reps), desc=backend.name, unit="frame", leave=False):
        t0 = time.perf_counter()
        res = pipeline.process(frames[i % 4], camera, settings, alloc=alloc)
        totals.append(1e3 * (time.perf_counter() - t0))
        for s in STAGES:
            per_stage[s].append(res.timings_ms.get(f"{s}_ms", 0.0))
    med = {s: statistics.median(v) for s, v in per_stage.items()}
    total = statistics.median(totals)
    return {"backend": backend.name, "reason": backend.reason, **{f"{s}_ms": med[s] for s in STAGES},
            "total_ms": total, "fps": 1e3 / total if total > 0 else float("inf"),
            "inference_share": med["inference"] / total if total > 0 else 0.0,
            "input_hw": [net.height, net.width], "frame_wh": [w, h], "fx": fx}


def _make(name: str, model: Path, args: argparse.Namespace) -> Any:
    from reflector_ros.backends import make_backend

    if name.startswith("torch"):
        import torch

        if args.threads > 0:
            torch.set_num_threads(args.threads)
    api = {"onnxruntime-cpu": "onnxruntime"}.get(name, name)
    return make_backend(api, model, engine_dir=args.engine_dir, num_threads=args.threads)


def run(args: argparse.Namespace) -> int:
    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.core.errors import InputError

    w, h = args.size
    fx = 0.9 * w if args.fx is None else args.fx
    problems = []
    if args.reps < 1 or args.warmup < 0:
        problems.append("--reps must be >= 1 and --warmup >= 0")
    if args.threads < 0:
        problems.append(f"--threads must be >= 0 (0 = automatic), got {args.threads}")
    problems += [f"--model {m}: " + ("a folder, not a model file" if m.is_dir() else "no such file")
                 for m in args.model if not m.is_file()]
    try:
        Intrinsics.centred(fx, w, h).checked()
    except InputError as exc:
        problems.append(f"--size {w} {h} --fx {fx:g}: {exc}")
    if problems:
        print("reflector bench: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="reflector_bench_") as tmp:
        try:
            models = _models(args, Path(tmp))
        except Exception as err:
            print(f"reflector bench: error: {err}", file=sys.stderr)
            return 1
        for model, label in models:
            for name in args.backends:
                try:
                    backend = _make(name, model, args)
                except Exception as err:  # unavailable here: report why, bench the rest
                    skipped[name if len(models) == 1 else f"{label} {name}"] = f"{type(err).__name__}: {err}"
                    continue
                try:
                    rows.append({"model": label, **bench_backend(backend, tuple(args.size), fx, args.reps,
                                                                 args.warmup)})
                except InputError as err:
                    print(f"reflector bench: error: {label} on {name}: {err}", file=sys.stderr)
                    return 2
                del backend
    if args.json:
        print(json.dumps({"reps": args.reps, "results": rows, "skipped": skipped}, indent=2))
        return 0 if rows else 1
    print(f"frame {w}x{h}, fx {fx:g} px, median of {args.reps} frames (ms); input is height x width")
    head = (f"{'model':<34}{'backend':<17}{'input':>9}{'preproc':>9}{'infer':>8}{'postproc':>10}{'points':>8}"
            f"{'total':>8}{'FPS':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        hw = f"{r['input_hw'][0]}x{r['input_hw'][1]}"
        print(f"{_cut(r['model'], 33):<34}{r['backend']:<17}{hw:>9}{r['preprocess_ms']:>9.2f}{r['inference_ms']:>8.2f}"
              f"{r['postprocess_ms']:>10.2f}{r['points_ms']:>8.2f}{r['total_ms']:>8.2f}{r['fps']:>7.1f}")
    base = rows[0]["total_ms"] if rows else 0.0
    if len(rows) > 1 and base > 0:
        first = f"{rows[0]['model']} ({rows[0]['backend']})"
        for r in rows[1:]:
            if r["total_ms"] > 0:
                print(f"{first} takes {base / r['total_ms']:.2f}x the time per frame of {r['model']} ({r['backend']})")
    for name, why in skipped.items():
        print(f"{name:<18}skipped: {why}")
    return 0 if rows else 1
