"""Depth post-processing: validity masks (REP 118), 16UC1 millimetres, a colormap for people.

REP 118: float depth uses NaN for "no reading"; 0.0 would be a valid point at the
camera origin for depth_image_proc and RViz, so it is never emitted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from reflector_ros.core.errors import InputError


def _check_range(min_depth: float, max_depth: float) -> None:
    if math.isnan(min_depth) or math.isnan(max_depth) or not min_depth < max_depth:
        raise InputError(f"depth range [{min_depth}, {max_depth}] is empty or NaN")


@dataclass(frozen=True, eq=False)
class Validity:
    """Which depth pixels may be published (REP 118: the rest are NaN, never 0.0).

    min_depth, max_depth: metres; min_confidence: 0..1; unseen: (h, w) bool at the output
    size, True where the rectified frame has no source pixel (the lens never saw it).
    """
    min_depth: float = 0.0
    max_depth: float = math.inf
    min_confidence: float = 0.0
    unseen: np.ndarray | None = None


def finalize_depth(depth: np.ndarray, confidence: np.ndarray | None, validity: Validity,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Metric depth -> float32 with NaN wherever the value must not be trusted.

    Invalid: non-finite, <= 0, outside [min_depth, max_depth], confidence below
    ``min_confidence`` (NaN confidence too), or unseen. ``out=depth`` works in place. The
    one place validity is decided on the host; torch_ops.finish_depth is its device twin.
    """
    _check_range(validity.min_depth, validity.max_depth)
    if depth.ndim != 2:
        raise InputError(f"depth must be 2-D, got shape {depth.shape}")
    if confidence is not None and confidence.shape != depth.shape:
        raise InputError(f"confidence {confidence.shape} does not match depth {depth.shape}")
    if validity.unseen is not None and validity.unseen.shape != depth.shape:
        raise InputError(f"unseen mask {validity.unseen.shape} does not match depth {depth.shape}")
    if out is None:
        out = np.empty(depth.shape, np.float32)
    elif out.shape != depth.shape or out.dtype != np.float32:
        raise InputError(f"out must be {depth.shape} float32, got {out.shape} {out.dtype}")
    lo = np.float32(validity.min_depth) if validity.min_depth > 0 else np.nextafter(np.float32(0), np.float32(1))
    hi = np.float32(validity.max_depth) if math.isfinite(validity.max_depth) else np.finfo(np.float32).max
    good = depth >= lo             # NaN compares False
    good &= depth <= hi            # +inf fails here
    if confidence is not None and validity.min_confidence > 0:
        good &= confidence >= np.float32(validity.min_confidence)
    if validity.unseen is not None:
        good &= ~validity.unseen
    if out is not depth:
        np.copyto(out, depth, casting="same_kind")
    np.copyto(out, np.float32(np.nan), where=~good)
    return out


def finalize_outputs(depth: np.ndarray, confidence: np.ndarray, unseen: np.ndarray | None = None) -> None:
    """In place, on the network's resized outputs: NaN where depth is non-finite or <= 0
    (REP 118: never 0.0); confidence in [0, 1] with NaN as 0, and 0 where unseen."""
    with np.errstate(invalid="ignore"):
        bad = ~(depth > 0) | ~np.isfinite(depth)
    depth[bad] = np.nan
    np.nan_to_num(confidence, copy=False, nan=0.0)
    np.clip(confidence, 0.0, 1.0, out=confidence)
    if unseen is not None:
        confidence[unseen] = 0.0


def to_millimetres(depth: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Metres -> 16UC1 millimetres (rounded), 0 = invalid per REP 118.

    Values beyond 65.535 m are written as 0 (invalid), not saturated to 65535: a
    saturated value would claim a reading at 65.5 m that the network never made.
    NaN, <= 0 and anything rounding to 0 mm are 0 as well.
    """
    if out is None:
        out = np.zeros(depth.shape, np.uint16)
    else:
        if out.shape != depth.shape or out.dtype != np.uint16:
            raise InputError(f"out must be {depth.shape} uint16, got {out.shape} {out.dtype}")
        out.fill(0)
    mm = np.multiply(depth, np.float32(1000.0), dtype=np.float32)
    np.rint(mm, out=mm)
    valid = mm >= 1.0
    valid &= mm <= 65535.0
    np.copyto(out, mm, casting="unsafe", where=valid)
    return out


@lru_cache(maxsize=1)
def _turbo_lut() -> np.ndarray:
    """256-entry BGR LUT: 0 = black (invalid), 1..255 = TURBO from far (blue) to near (red)."""
    ramp = np.linspace(0, 255, 255).round().astype(np.uint8).reshape(-1, 1)
    turbo = cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)          # (255, 1, 3)
    lut = np.zeros((256, 1, 3), np.uint8)
    lut[1:] = turbo
    return lut


def colorize(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Depth -> (H, W, 3) uint8 BGR TURBO image, near = warm, NaN/invalid = black.

    One affine pass to an index in 1..255 (0 reserved for invalid), then one LUT lookup.
    """
    _check_range(min_depth, max_depth)
    if not (math.isfinite(min_depth) and math.isfinite(max_depth)):
        raise InputError("colorize needs a finite depth range")
    if depth.ndim != 2:
        raise InputError(f"depth must be 2-D, got shape {depth.shape}")
    a = np.float32(-254.0 / (max_depth - min_depth))
    b = np.float32(255.5 - a * min_depth)   # min_depth -> 255 (warm), max_depth -> 1; +0.5 rounds on truncation
    idx = np.multiply(depth, a, dtype=np.float32)
    idx += b
    np.clip(idx, 1.0, 255.0, out=idx)
    np.copyto(idx, np.float32(0.0), where=np.isnan(idx))
    return cv2.applyColorMap(idx.astype(np.uint8), _turbo_lut())


def nice_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) inside [lo, hi], at most ``most``
    (at least 2); where no two round values fit, [lo, hi] themselves."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, most - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]
    return ticks if len(ticks) >= 2 else [lo, hi]


def colour_legend(width: int, ramp_bgr: np.ndarray, lo: float, hi: float, title: str, unit: str = "",
                  ends: tuple[str, str] | None = None, over: bool = False, height: int = 40) -> np.ndarray:
    """(height, width, 3) uint8 BGR key for a colour scale: the ramp from ``lo`` (left) to
    ``hi`` (right), round ticks with their values, as many as fit without overlapping (or the
    two ``ends`` labels instead, for a scale without fixed values), and ``title`` on the left.
    ``over``: values above ``hi`` take its colour, and its label says so ("0.5+").

    ramp_bgr: (n, 3) uint8 colours of evenly spaced values from lo to hi (n >= 2). For depth
    drawn by :func:`colorize` use :func:`depth_legend`, which takes the ramp from it.
    A key too narrow for its ramp is left blank. Raises InputError for height < 24.
    """
    if height < 24:
        raise InputError(f"colour_legend: height {height} < 24 pixels")
    img = np.full((height, max(1, width), 3), 24, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    (tw, _), _ = cv2.getTextSize(title, font, scale, 1)
    x0 = min(tw + 14, width // 2)
    x1 = width - 14
    if x1 - x0 < 20:
        return img
    cv2.putText(img, title, (6, 17), font, scale, (235, 235, 235), 1, cv2.LINE_AA)
    ramp = np.asarray(ramp_bgr, np.uint8).reshape(-1, 1, 3)
    bar = cv2.resize(ramp.transpose(1, 0, 2), (x1 - x0, 12), interpolation=cv2.INTER_LINEAR)
    img[6:18, x0:x1] = bar
    if ends:
        marks = [(lo, ends[0]), (hi, ends[1])]
    else:
        widest = max(cv2.getTextSize(f"{v:.4g}{unit}+", font, scale, 1)[0][0] for v in (lo, hi, (lo + hi) / 2))
        ticks = nice_ticks(lo, hi, most=max(2, (x1 - x0) // (widest + 10)))
        marks = [(v, f"{v:.4g}{unit}" + ("+" if over and v == ticks[-1] and abs(v - hi) < 1e-9 else "")) for v in ticks]
    for v, text in marks:
        x = int(round(x0 + (v - lo) / (hi - lo) * (x1 - x0 - 1))) if hi > lo else x0
        cv2.line(img, (x, 18), (x, 22), (235, 235, 235), 1)
        (w, _), _ = cv2.getTextSize(text, font, scale, 1)
        cv2.putText(img, text, (min(max(0, x - w // 2), width - w), height - 5), font, scale, (235, 235, 235), 1,
                    cv2.LINE_AA)
    return img


def depth_legend(width: int, min_depth: float, max_depth: float, title: str = "depth") -> np.ndarray:
    """Key of :func:`colorize` over [min_depth, max_depth] metres: the very colours it draws."""
    _check_range(min_depth, max_depth)
    ramp = colorize(np.linspace(min_depth, max_depth, 256, dtype=np.float32).reshape(1, -1), min_depth, max_depth)
    return colour_legend(width, ramp[0], min_depth, max_depth, title, " m")
