"""Scoring a model (or a baseline) on depth datasets with the published protocol: the
per-frame metrics, their means per set and per group, the scale statistics and the 2x-zoom
check. `reflector eval` (commands/eval.py), the trainer's validation, `reflector demo` and
the tools all score through ``evaluate_dataset``, so every figure is computed one way.
Predictors run through a Backend (ONNX Runtime needs no torch) or an in-memory torch model.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.data.sample import Sample
from reflector_ros.train.metrics import (
    depth_metrics, mean_metrics, median_scale, valid_mask,
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
