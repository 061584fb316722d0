"""`reflector bench`: per-stage median latency of every backend that runs here.

Times a 640x480 frame end to end (preprocess, inference, postprocess, and the packed
xyz+rgb cloud with the node's default filters, on the device where the backend can) at the
model's input size, so "pure inference" can be set against what a frame really costs.
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
    p.add_argument("--model", type=Path, default=None,
                   help="X.onnx or X.pt (the sibling with the other suffix is used where needed); "
                        "default: the embedded model, or random weights for --arch")
    p.add_argument("--arch", choices=("small", "base"), default=None,
                   help="bench a random-weight model of this architecture (when no trained model is at hand)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input size for --arch (default the ModelMeta default)")
    p.add_argument("--backends", nargs="+", choices=CANDIDATES, default=list(CANDIDATES))
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = physical cores)")
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(640, 480), help="camera frame size")
    p.add_argument("--engine-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _random_model(arch: str, input_size: list[int] | None, out_dir: Path) -> Path:
    """Random weights through the real model and exporter: latency does not depend on training."""
    import torch

    from reflector_ros.meta import ModelMeta
    from reflector_ros.model.export import export_onnx
    from reflector_ros.model.reflector import build_model, save_checkpoint

    torch.manual_seed(0)
    kw: dict[str, Any] = {"arch": arch}
    if input_size:
        kw.update(input_height=input_size[0], input_width=input_size[1])
    meta = ModelMeta(**kw)
    model = build_model(meta).eval()
    stem = f"random_{arch}"
    save_checkpoint(out_dir / f"{stem}.pt", model, meta)
    return Path(export_onnx(model, meta, out_dir, stem=stem)["fused"])


def _resolve_model(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    if args.model is not None:
        return args.model, f"{args.model}"
    from reflector_ros.models import default_model

    if args.arch is None and default_model(".onnx").is_file():
        return default_model(".onnx"), "embedded default model"
    arch = args.arch or "small"
    print(f"bench: building a random-weight '{arch}' model (no trained model given)", file=sys.stderr)
    return _random_model(arch, args.input_size, tmp), f"random-weight {arch}"


def bench_backend(backend: Any, size: tuple[int, int], reps: int, warmup: int) -> dict[str, Any]:
    """Median per-stage ms over ``reps`` frames after ``warmup`` frames."""
    from tqdm import tqdm

    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.core.pointcloud import CloudSpec, ray_lengths, ray_table
    from reflector_ros.meta import focal_scale

    w, h = size
    intr = Intrinsics(fx=0.9 * w, fy=0.9 * w, cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h)
    rays = ray_table(intr)
    # the node's cloud with its default filters and rgb, into one reused buffer as the node does
    cloud = CloudSpec(rays, ray_lengths(rays), 1, min_depth=0.2, max_depth=10.0, rgb=True,
                      out=np.empty((h, w, 4), np.float32))
    scale = focal_scale(intr.fx, intr.fy, w, h, backend.meta)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    for i in range(warmup):
        backend.run(frames[i % 4], scale, (h, w), cloud=cloud)
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals: list[float] = []
    for i in tqdm(range(reps), desc=backend.name, unit="frame", leave=False):
        t0 = time.perf_counter()
        res = backend.run(frames[i % 4], scale, (h, w), cloud=cloud)
        totals.append(1e3 * (time.perf_counter() - t0))
        for s in STAGES:
            per_stage[s].append((res.timings_ms or {}).get(s, 0.0))
    med = {s: statistics.median(v) for s, v in per_stage.items()}
    total = statistics.median(totals)
    return {"backend": backend.name, "reason": backend.reason, **{f"{s}_ms": med[s] for s in STAGES},
            "total_ms": total, "fps": 1e3 / total if total > 0 else float("inf"),
            "inference_share": med["inference"] / total if total > 0 else 0.0,
            "input_hw": [backend.meta.input_height, backend.meta.input_width], "frame_wh": [w, h]}


def _make(name: str, model: Path, args: argparse.Namespace) -> Any:
    from reflector_ros.backends import make_backend

    if name.startswith("torch"):
        import torch

        if args.threads > 0:
            torch.set_num_threads(args.threads)
    api = {"onnxruntime-cpu": "onnxruntime"}.get(name, name)
    return make_backend(api, model, engine_dir=args.engine_dir, num_threads=args.threads)


def run(args: argparse.Namespace) -> int:
    if args.reps < 1 or args.warmup < 0:
        print("reflector bench: error: --reps must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="reflector_bench_") as tmp:
        try:
            model, model_desc = _resolve_model(args, Path(tmp))
        except Exception as err:
            print(f"reflector bench: error: {err}", file=sys.stderr)
            return 1
        for name in args.backends:
            try:
                backend = _make(name, model, args)
            except Exception as err:  # unavailable here: report why, bench the rest
                skipped[name] = f"{type(err).__name__}: {err}"
                continue
            rows.append(bench_backend(backend, tuple(args.size), args.reps, args.warmup))
            del backend
    if args.json:
        print(json.dumps({"model": model_desc, "reps": args.reps, "results": rows, "skipped": skipped}, indent=2))
        return 0
    w, h = args.size
    hw = rows[0]["input_hw"] if rows else ["?", "?"]
    print(f"model: {model_desc}, network input {hw[0]}x{hw[1]}, frame {w}x{h}, median of {args.reps} frames (ms)")
    head = f"{'backend':<18}{'preproc':>9}{'infer':>9}{'postproc':>10}{'points':>8}{'total':>9}{'FPS':>8}{'infer/e2e':>11}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['backend']:<18}{r['preprocess_ms']:>9.2f}{r['inference_ms']:>9.2f}{r['postprocess_ms']:>10.2f}"
              f"{r['points_ms']:>8.2f}{r['total_ms']:>9.2f}{r['fps']:>8.1f}{r['inference_share']:>10.0%}")
    for name, why in skipped.items():
        print(f"{name:<18}skipped: {why}")
    return 0 if rows else 1
