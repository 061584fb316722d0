"""Standard monocular-depth metrics (Eigen et al.) and the evaluation crops.

Pure numpy, no torch: `reflector eval` with ONNX Runtime must work without torch.
Metrics are computed per image and averaged over images (the convention of the
published NYU/KITTI tables), on pixels inside the crop with min < gt <= cap.
"""
from __future__ import annotations

import numpy as np

from reflector_ros.core.errors import InputError

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")
# Eigen crop on NYU's 640x480 frames: rows 45..470, cols 41..600.
EIGEN_CROP_480x640 = (45, 471, 41, 601)


def eigen_crop(h: int, w: int) -> tuple[int, int, int, int]:
    """NYU Eigen crop (top, bottom, left, right), scaled to frames other than 480x640."""
    t, b, l, r = EIGEN_CROP_480x640
    return (round(t * h / 480), round(b * h / 480), round(l * w / 640), round(r * w / 640))


def garg_crop(h: int, w: int) -> tuple[int, int, int, int]:
    """KITTI Garg crop: rows 0.408-0.992 of H, columns 0.036-0.964 of W."""
    return (int(0.40810811 * h), int(0.99189189 * h), int(0.03594771 * w), int(0.96405229 * w))


def crop_mask(h: int, w: int, crop: str) -> np.ndarray:
    """Boolean (h, w) mask of the evaluated region for crop in none|eigen|garg."""
    mask = np.zeros((h, w), dtype=bool)
    if crop == "none":
        mask[:] = True
        return mask
    if crop == "eigen":
        t, b, l, r = eigen_crop(h, w)
    elif crop == "garg":
        t, b, l, r = garg_crop(h, w)
    else:
        raise InputError(f"unknown crop {crop!r}; use none, eigen or garg")
    mask[t:b, l:r] = True
    return mask


def valid_mask(gt: np.ndarray, min_depth: float = 1e-3, max_depth: float | None = None,
               crop: str = "none") -> np.ndarray:
    """Pixels that count: finite gt inside (min_depth, max_depth] and inside the crop."""
    m = np.isfinite(gt) & (gt > min_depth)
    if max_depth is not None:
        m &= gt <= max_depth
    return m & crop_mask(gt.shape[0], gt.shape[1], crop)


def median_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scale pred by median(gt)/median(pred) on mask: the protocol for relative depth."""
    p = pred[mask]
    ok = np.isfinite(p) & (p > 0)
    if not ok.any():
        return pred
    return pred * (np.median(gt[mask][ok]) / np.median(p[ok]))


def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Eigen metrics of one image on mask. Invalid predictions (NaN, <= 0) count as 1e-3 m,

    so a model that refuses pixels is penalised rather than rewarded.
    """
    if pred.shape != gt.shape:
        raise InputError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if mask is None:
        mask = valid_mask(gt)
    g = gt[mask].astype(np.float64)
    if g.size == 0:
        raise InputError("no valid ground-truth pixels to evaluate")
    p = pred[mask].astype(np.float64)
    p = np.where(np.isfinite(p) & (p > 1e-3), p, 1e-3)
    ratio = np.maximum(g / p, p / g)
    diff = g - p
    e = np.log(p) - np.log(g)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff ** 2 / g)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(np.mean(e ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "silog": float(100.0 * np.sqrt(max(np.mean(e ** 2) - np.mean(e) ** 2, 0.0))),
        "d1": float(np.mean(ratio < 1.25)),
        "d2": float(np.mean(ratio < 1.25 ** 2)),
        "d3": float(np.mean(ratio < 1.25 ** 3)),
    }


def confidence_split(pred: np.ndarray, confidence: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """Does the confidence rank pixels by error? One frame's (AbsRel of all valid pixels,
    AbsRel of the most confident half, confidence p90 - p10).

    pred, confidence, gt: (h, w); pred metres (NaN invalid), confidence in [0, 1], gt metres
    (<= 0 invalid). Valid: gt > 0 and pred finite. The half is confidence >= its median.
    """
    ok = (gt > 0) & np.isfinite(pred)
    err = np.abs(pred[ok] - gt[ok]) / gt[ok]
    conf = confidence[ok]
    return (float(err.mean()), float(err[conf >= np.median(conf)].mean()),
            float(np.percentile(conf, 90) - np.percentile(conf, 10)))


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average per-image metrics over images; adds the image count as 'n'."""
    if not rows:
        raise InputError("no images were evaluated")
    out = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_NAMES}
    out["n"] = float(len(rows))
    return out


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """One row per dataset/variant: the table `reflector eval` prints and docs quote."""
    head = "| set | n | AbsRel | SqRel | RMSE | RMSElog | log10 | SILog | δ1 | δ2 | δ3 |"
    lines = [head, "|" + "---|" * 11]
    for name, m in results.items():
        vals = " | ".join(f"{m[k]:.3f}" for k in METRIC_NAMES)
        lines.append(f"| {name} | {int(m['n'])} | {vals} |")
    return "\n".join(lines)
