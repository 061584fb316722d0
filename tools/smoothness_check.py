"""How rough is the depth where the world is smooth, and how sharp where it is not?

Per frame, through the node's own pipeline (ONNX Runtime, the frame's intrinsics, depth at
the image's resolution):

- roughness: the median |log d(p) - log d(q)| over 4-neighbour pixel pairs p, q, ``--stride``
  pixels apart, that both have ground truth, for the prediction and for the ground truth
  itself (HoloLens' ground truth repeats each sensor pixel 2 x 2, hence stride 2). A prediction much
  rougher than its ground truth draws ripples into the cloud (a floor like a washboard
  gives Nav2's voxel layer false obstacles), however good its AbsRel.
- sharpness: of the ground truth's steps larger than 10 % between pixels ``--stride`` apart,
  the share the prediction shows as a step larger than 3 % (0 for a blurred map: the cloud
  then smears points across the gap between a thing and what lies behind it).
- AbsRel on pixels next to a ground-truth discontinuity (a neighbour > 5 % nearer or
  farther) and on the rest.

Several models are compared side by side on the same frames:

    .venv/bin/python tools/smoothness_check.py [MODEL.onnx ...] [--data DIR] [--frames 250:373] [--every 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reflector_ros.backends import make_backend  # noqa: E402
from reflector_ros.data.manifest import ManifestDataset  # noqa: E402
from reflector_ros.pipeline import DepthPipeline, FrameSettings  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hololens_office"
EDGE = 0.05      # a neighbour more than 5 % nearer or farther: a depth discontinuity


def _pairs(depth: np.ndarray, valid: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per axis (down, right): |Δ log depth| between 4-neighbours, and where both are valid."""
    ld = np.log(np.where(valid, depth, 1.0))
    return [(np.abs(np.diff(ld, axis=ax)), np.delete(valid, 0, ax) & np.delete(valid, -1, ax)) for ax in (0, 1)]


def neighbour_steps(depth: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|Δ log depth| to the right and downward neighbours where both pixels are valid, and
    the (h, w) mask of pixels beside a step larger than EDGE in ``depth``."""
    (dy, oky), (dx, okx) = _pairs(depth, valid)
    edge = np.zeros(depth.shape, bool)
    for ax, (step, ok) in ((1, (dx, okx)), (0, (dy, oky))):
        jump = ok & (step > np.log1p(EDGE))
        edge[(slice(None),) * ax + (slice(1, None),)] |= jump
        edge[(slice(None),) * ax + (slice(None, -1),)] |= jump
    return dx[okx], dy[oky], edge


def sharpness(depth: np.ndarray, truth: np.ndarray, valid: np.ndarray, step: float = 0.10,
              shown: float = 0.03) -> float:
    """Share of the truth's 4-neighbour steps larger than ``step`` (relative) that ``depth``
    shows as a step larger than ``shown``; NaN where the truth has none."""
    big = seen = 0
    for (dt, ok), (dd, _) in zip(_pairs(truth, valid), _pairs(depth, valid)):
        jump = ok & (dt > np.log1p(step))
        big += int(jump.sum())
        seen += int((jump & (dd > np.log1p(shown))).sum())
    return seen / big if big else float("nan")


def roughness(depth: np.ndarray, valid: np.ndarray) -> float:
    """Median |Δ log depth| over the valid 4-neighbour pairs (0 for a plane facing the camera)."""
    dx, dy, _ = neighbour_steps(depth, valid)
    both = np.concatenate([dx, dy])
    return float(np.median(both)) if both.size else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("models", nargs="*", default=[None], help="ONNX models (default: the embedded model)")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--frames", default="250:373")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--stride", type=int, default=2, help="pixels between the pairs compared")
    a = p.parse_args()
    if a.stride < 1:
        p.error(f"--stride must be at least 1, got {a.stride}")
    try:
        ds = ManifestDataset(a.data, a.frames)
        pipes = [(m or "embedded model", DepthPipeline(make_backend("onnxruntime", m))) for m in a.models]
    except (OSError, ValueError) as exc:  # InputError is a ValueError
        print(f"smoothness_check: {exc}", file=sys.stderr)
        return 2
    rows: dict[str, list[tuple[float, ...]]] = {name: [] for name, _ in pipes}
    truth = []
    k = a.stride
    for i in range(0, len(ds), max(1, a.every)):
        s = ds[i]
        gt_ok = s.depth > 0
        _, _, edge = neighbour_steps(s.depth, gt_ok)
        truth.append(roughness(s.depth[::k, ::k], gt_ok[::k, ::k]))
        for name, pipe in pipes:
            r = pipe.process(s.image, s.camera, FrameSettings())
            ok = gt_ok & np.isfinite(r.depth)
            rel = np.abs(r.depth - s.depth) / np.where(gt_ok, s.depth, 1.0)
            at_edge = rel[ok & edge].mean() if (ok & edge).any() else np.nan
            rows[name].append((roughness(r.depth[::k, ::k], ok[::k, ::k]),
                               sharpness(r.depth[::k, ::k], s.depth[::k, ::k], ok[::k, ::k]),
                               at_edge, rel[ok & ~edge].mean()))
    n = len(truth)
    print(f"{a.data} [{a.frames}] every {a.every} ({n} frames), pairs {k} px apart; ground truth roughness {np.mean(truth):.4f}\n")
    print("| model | roughness (median of abs Δ log d) | × ground truth's | sharpness (steps > 10 % shown) | "
          "AbsRel beside a discontinuity | AbsRel elsewhere |\n|---|---|---|---|---|---|")
    for name, vals in rows.items():
        r, sh, e, f = (float(np.nanmean([v[j] for v in vals])) for j in range(4))
        print(f"| {name} | {r:.4f} | {r / np.mean(truth):.1f} | {sh:.3f} | {e:.3f} | {f:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
