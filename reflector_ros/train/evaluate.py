"""`reflector eval`: a model (or a baseline) on depth datasets, with the published protocol.

Numbers in docs and the README come from here, so every figure is reproducible with
one command. Runs through a Backend (ONNX Runtime needs no torch); training reuses
`evaluate_dataset` with an in-memory torch model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.data.sample import Sample
from reflector_ros.train.metrics import (
    depth_metrics, markdown_table, mean_metrics, median_scale, valid_mask,
)

# rgb (H, W, 3) uint8 and its camera -> metric depth (H, W), NaN invalid
Predictor = Callable[[np.ndarray, Intrinsics], np.ndarray]


def backend_predictor(backend: Any) -> Predictor:
    """A Backend through the node's own frame pipeline (reflector_ros.pipeline), with no
    range or confidence limits: the metrics decide what counts."""
    from reflector_ros.pipeline import DepthPipeline, FrameSettings

    pipeline = DepthPipeline(backend)
    settings = FrameSettings()

    def predict(rgb: np.ndarray, camera: Intrinsics) -> np.ndarray:
        return pipeline.process(np.ascontiguousarray(rgb), camera, settings).depth
    return predict


def torch_predictor(model: Any, meta: Any, device: Any = "cpu") -> Predictor:
    """An in-memory torch model as a Predictor (validation during training), through the
    same pipeline and torch backend as `reflector eval --backend torch`."""
    from reflector_ros.backends.torch_backend import TorchBackend

    return backend_predictor(TorchBackend.from_model(model, meta, device))


def spread_indices(n_frames: int, limit: int) -> np.ndarray:
    """Indices of ``limit`` frames spread evenly over a set of ``n_frames`` (0: all of them):
    a limited evaluation covers the whole set rather than its first frames."""
    n = n_frames if limit <= 0 else min(limit, n_frames)
    if n == 0:
        raise InputError("dataset is empty")
    return np.linspace(0, n_frames - 1, n).round().astype(int) if n < n_frames else np.arange(n)


def confidence_ranking(backend: Any, ds: Sequence[Sample], limit: int = 0) -> tuple[float, float]:
    """Does the confidence output rank pixels by error? (AbsRel of all valid pixels, AbsRel of
    the most confident half), each per frame (train.metrics.confidence_split) through the
    node's pipeline, then averaged over ``limit`` frames spread over the set (0: all).
    ``backend``: a Backend, or a torch model (its meta as ``backend.meta``... see
    :func:`torch_predictor`) wrapped by TorchBackend.from_model."""
    from reflector_ros.pipeline import DepthPipeline, FrameSettings
    from reflector_ros.train.metrics import confidence_split

    pipeline = DepthPipeline(backend)
    every, half = [], []
    for i in spread_indices(len(ds), limit):
        s = ds[int(i)]
        if not (s.depth > 0).any():
            continue
        r = pipeline.process(np.ascontiguousarray(s.image), s.camera, FrameSettings())
        a, h, _ = confidence_split(r.depth, r.confidence, s.depth)
        every.append(a)
        half.append(h)
    if not every:
        raise InputError("no frame has valid depth")
    return float(np.mean(every)), float(np.mean(half))


def predict_flip(predict: Predictor, rgb: np.ndarray, camera: Intrinsics, flip: bool) -> np.ndarray:
    """Optionally average with the mirrored image's prediction (ZoeDepth's evaluation)."""
    d = predict(rgb, camera)
    if flip:
        d = 0.5 * (d + predict(np.ascontiguousarray(rgb[:, ::-1]), camera.mirrored())[:, ::-1])
    return d


def baseline_depth(kind: str, sample: Sample, mask: np.ndarray, constant: float) -> np.ndarray:
    """The reference predictions the README's table quotes: a constant, or each frame's GT median."""
    if kind == "constant":
        return np.full(sample.depth.shape, constant, np.float32)
    if kind == "median-gt":
        return np.full(sample.depth.shape, float(np.median(sample.depth[mask])), np.float32)
    raise InputError(f"unknown baseline {kind!r}; use constant or median-gt")


def evaluate_dataset(ds: Sequence[Sample], predict: Predictor | None, *, crop: str = "none",
                     min_depth: float = 1e-3, max_depth: float | None = None, flip: bool = False,
                     baseline: str | None = None, constant: float = 2.5, limit: int = 0,
                     progress: bool = True, desc: str = "eval") -> dict[str, Any]:
    """Per-image metrics averaged over the set: {'metric': ..., 'median_scaled': ...,
    'scale': per-frame median(pred)/median(gt) statistics, 'groups': {group: {'metric',
    'median_scaled'}} for sets whose frames carry a group}."""
    from tqdm import tqdm

    idx = spread_indices(len(ds), limit)
    rows, rows_med, groups, scales = [], [], [], []
    for i in tqdm(idx, desc=desc, unit="img", disable=not progress, leave=False):
        s = ds[int(i)]
        mask = valid_mask(s.depth, min_depth, max_depth, crop)
        if not mask.any():
            continue
        if baseline:
            pred = baseline_depth(baseline, s, mask, constant)
        else:
            assert predict is not None
            pred = predict_flip(predict, s.image, s.camera, flip)
        rows.append(depth_metrics(pred, s.depth, mask))
        rows_med.append(depth_metrics(median_scale(pred, s.depth, mask), s.depth, mask))
        groups.append(s.group)
        scales.append(frame_scale(pred, s.depth, mask))
    if not rows:
        cap = f"{max_depth:g}" if max_depth is not None else "inf"
        raise InputError(f"none of the {len(idx)} frames has ground-truth depth in [{min_depth:g}, {cap}] m "
                         f"(crop {crop}; a bag spec needs depth=TOPIC to evaluate against)")
    out: dict[str, Any] = {"metric": mean_metrics(rows), "median_scaled": mean_metrics(rows_med),
                           "scale": scale_stats(scales)}
    if any(groups):
        out["groups"] = {g: {"metric": mean_metrics([r for r, k in zip(rows, groups) if k == g]),
                             "median_scaled": mean_metrics([r for r, k in zip(rows_med, groups) if k == g]),
                             "scale": scale_stats([v for v, k in zip(scales, groups) if k == g])}
                         for g in sorted(set(groups))}
    return out


def mean_of_groups(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each metric averaged over groups (every group weighs the same, however many frames);
    'n' is the total frame count."""
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "n"}
    out["n"] = float(sum(r["n"] for r in rows))
    return out


def frame_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """median(pred) / median(gt) on the valid pixels: 1 when the frame's metric scale is right."""
    p = pred[mask]
    ok = np.isfinite(p) & (p > 0)
    return float(np.median(p[ok]) / np.median(gt[mask][ok])) if ok.any() else float("nan")


def scale_stats(scales: list[float]) -> dict[str, float]:
    """Per-frame scale (median pred / median gt): median, p10, p90, and the median relative
    change between consecutive frames (how much the scale jumps frame to frame)."""
    a = np.asarray([v for v in scales if np.isfinite(v)], np.float64)
    if a.size == 0:
        return {}
    change = np.abs(np.diff(np.log(a))) if a.size > 1 else np.zeros(1)
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90)),
            "frame_to_frame": float(np.median(np.expm1(change)))}


def focal_consistency(predict: Predictor, rgb: np.ndarray, camera: Intrinsics) -> float:
    """Median ratio of depth from a 2x-upscaled centre crop (fx doubled) to the full frame's.

    The same scene seen through a longer lens must keep its metric depth; 1.0 is perfect.
    """
    h, w = rgb.shape[:2]
    ch, cw = h // 2, w // 2
    t, l = (h - ch) // 2, (w - cw) // 2
    full = predict(rgb, camera)[t:t + ch, l:l + cw]
    up = cv2.resize(rgb[t:t + ch, l:l + cw], (2 * cw, 2 * ch), interpolation=cv2.INTER_CUBIC)
    zoom_camera = camera.cropped(l, t, cw, ch).scaled(2 * cw, 2 * ch)
    zoom = cv2.resize(predict(up, zoom_camera), (cw, ch), interpolation=cv2.INTER_AREA)
    ok = np.isfinite(full) & np.isfinite(zoom) & (full > 0) & (zoom > 0)
    if not ok.any():
        raise InputError("no valid depth in the crop to compare")
    return float(np.median(zoom[ok] / full[ok]))


def focal_ratios(predict: Predictor, ds: Sequence[Sample], limit: int = 0) -> list[float]:
    """focal_consistency on ``limit`` frames spread over the set (0: all of them)."""
    return [focal_consistency(predict, ds[int(i)].image, ds[int(i)].camera) for i in spread_indices(len(ds), limit)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model file (.onnx, .pt, .engine); default: the embedded model")
    p.add_argument("--backend", default="auto",
                   help="auto|onnxruntime|onnxruntime-cuda|torch|torch-cpu|torch-cuda|tensorrt (default: auto)")
    p.add_argument("--data", action="append", required=True, metavar="SPEC",
                   help="dataset spec, e.g. manifest:DIR?frames=250:373 (repeatable)")
    p.add_argument("--frames", help="START:STOP[:STEP] applied to every --data")
    p.add_argument("--crop", choices=["eigen", "garg", "none"],
                   help="evaluation crop (default: the dataset's protocol: eigen for NYU, garg for KITTI, else none)")
    p.add_argument("--max-depth", type=float,
                   help="depth cap in metres (default: the dataset's: 10 for manifests and NYU, 80 for KITTI, none for bags)")
    p.add_argument("--min-depth", type=float, default=1e-3,
                   help="ground truth below this many metres is invalid (default: 0.001)")
    p.add_argument("--median-scale", action="store_true", help="also print the per-image median-scaled variant")
    p.add_argument("--flip", action="store_true", help="average with the flipped image's prediction")
    p.add_argument("--baseline", choices=["constant", "median-gt"],
                   help="evaluate a reference instead of a model: constant depth or each frame's median GT (oracle)")
    p.add_argument("--constant-depth", type=float, default=2.5, help="depth of the constant baseline, metres (default: 2.5)")
    p.add_argument("--limit", type=int, default=0, help="evaluate at most N frames per set, spread evenly (default 0: all)")
    p.add_argument("--focal-check", type=int, default=0, metavar="N",
                   help="also report the 2x-zoom ratio on N frames per set: depth of a centre crop upscaled 2x "
                        "with fx doubled over the full frame's (1.0 is a canonical camera that holds)")
    p.add_argument("--by-group", action="store_true",
                   help="one row per frame group (manifests whose frames carry a 'group', e.g. real_eval) and "
                        "a row with the mean over those groups")
    p.add_argument("--groups", help="comma-separated groups to keep (with --by-group; the mean is over these)")
    p.add_argument("--json", help="write all results as JSON here")
    p.add_argument("--markdown", help="write the table as markdown here")


def open_eval_set(spec: str, frames: str | None) -> tuple[Sequence[Sample], dict[str, Any]]:
    """The dataset and its protocol defaults; --frames selects on top of the spec."""
    from reflector_ros.data.manifest import frame_range
    from reflector_ros.data.registry import Subset, dataset_defaults, open_dataset, parse_spec

    cfg = parse_spec(spec)
    ds = open_dataset(spec)
    if frames:
        if cfg.get("frames"):
            raise InputError(f"{spec}: frames are given in the spec and in --frames; use one")
        ds = Subset(ds, frame_range(frames, len(ds)))
    return ds, dataset_defaults(spec)


def check_args(args: argparse.Namespace) -> None:
    """Refuse option values that could only give meaningless rows, and make the output
    files' folders now: a typo there must not cost a finished evaluation."""
    def finite(v: float) -> bool:
        return bool(np.isfinite(v))

    if not (finite(args.min_depth) and args.min_depth >= 0):
        raise InputError(f"--min-depth must be a finite number of metres >= 0, got {args.min_depth}")
    if args.max_depth is not None and not (finite(args.max_depth) and args.max_depth > args.min_depth):
        raise InputError(f"--max-depth must be a finite number of metres above --min-depth ({args.min_depth:g}), "
                         f"got {args.max_depth}")
    if not (finite(args.constant_depth) and args.constant_depth > 0):
        raise InputError(f"--constant-depth must be a positive number of metres, got {args.constant_depth}")
    for flag in ("limit", "focal_check"):
        if getattr(args, flag) < 0:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 0 (0: {'all frames' if flag == 'limit' else 'off'})")
    if args.groups and not args.by_group:
        raise InputError("--groups selects rows of --by-group: add --by-group")
    if args.constant_depth != 2.5 and args.baseline != "constant":
        print("warning: --constant-depth is used only with --baseline constant", file=sys.stderr)
    for flag in ("json", "markdown"):
        target = getattr(args, flag)
        if target:
            path = Path(target)
            if path.is_dir() or target.endswith(("/", os.sep)):
                raise InputError(f"--{flag} {path} is a folder; give a file name")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"--{flag} {path}: cannot make its folder ({exc})") from None


def run(args: argparse.Namespace) -> int:
    try:
        check_args(args)
        # open every set first: a typo in a spec fails before a model is loaded
        sets = [(spec, *open_eval_set(spec, args.frames)) for spec in args.data]
        predict = None
        label = args.baseline and (f"constant {args.constant_depth} m" if args.baseline == "constant"
                                   else "median GT (oracle)")
        if not args.baseline:
            from reflector_ros.backends import open_backend

            backend = open_backend(args.backend, args.model)
            predict = backend_predictor(backend)
            label = f"{args.model or 'embedded default'} ({backend.name})"
        results: dict[str, Any] = {"model": label, "sets": {}}
        table: dict[str, dict[str, float]] = {}
        for spec, ds, defaults in sets:
            crop = args.crop or defaults.get("crop") or "none"
            cap = args.max_depth if args.max_depth is not None else defaults.get("max_depth")
            name = spec + (f" [{args.frames}]" if args.frames else "")
            res = evaluate_dataset(ds, predict, crop=crop, min_depth=args.min_depth, max_depth=cap,
                                   flip=args.flip, baseline=args.baseline, constant=args.constant_depth,
                                   limit=args.limit, desc=Path(spec.split("?")[0]).name)
            entry: dict[str, Any] = {"crop": crop, "max_depth": cap, **res}
            if args.focal_check and predict is not None:
                ratios = focal_ratios(predict, ds, args.focal_check)
                entry["focal_ratio_median"] = float(np.median(ratios))
                entry["focal_ratio_worst"] = float(max(ratios, key=lambda r: abs(r - 1)))
            results["sets"][name] = entry
            if args.by_group and "groups" in res:
                keep = [g.strip() for g in args.groups.split(",")] if args.groups else sorted(res["groups"])
                missing = [g for g in keep if g not in res["groups"]]
                if missing:
                    raise InputError(f"{spec}: no frames in group(s) {missing}; groups: {sorted(res['groups'])}")
                for kind, suffix in (("metric", ""), ("median_scaled", " (median-scaled)")):
                    if kind == "median_scaled" and not args.median_scale:
                        continue
                    for g in keep:
                        table[f"{g}{suffix}"] = res["groups"][g][kind]
                    table[f"mean of {len(keep)} groups{suffix}"] = mean_of_groups([res["groups"][g][kind] for g in keep])
                entry["mean_of_groups"] = mean_of_groups([res["groups"][g]["metric"] for g in keep])
                entry["mean_of_groups_median_scaled"] = mean_of_groups([res["groups"][g]["median_scaled"] for g in keep])
                continue
            if args.by_group:
                print(f"note: {spec}: its frames carry no group; one row for the whole set", file=sys.stderr)
            table[name] = res["metric"]
            if args.median_scale:
                table[name + " (median-scaled)"] = res["median_scaled"]
    except (ValueError, FileNotFoundError) as exc:  # InputError is a ValueError
        print(f"reflector eval: error: {exc}", file=sys.stderr)
        return 2
    md = markdown_table(table)
    print(f"model: {label}\n\n{md}")
    for name, entry in results["sets"].items():
        if "focal_ratio_median" in entry:
            print(f"focal consistency {name}: median ratio {entry['focal_ratio_median']:.3f} "
                  f"(worst frame {entry['focal_ratio_worst']:.3f})")
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        if args.markdown:
            Path(args.markdown).write_text(md + "\n")
    except OSError as exc:
        print(f"reflector eval: error: cannot write the results (the table above has them): {exc}", file=sys.stderr)
        return 2
    return 0
