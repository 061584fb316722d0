"""Does the confidence output rank pixels by error? AbsRel of all valid pixels vs of the
most confident half (per frame, averaged), and the per-frame 10-90 % confidence spread.

Also: how steady is the metric scale over a sequence? Per frame, the median ratio of
predicted to true depth; printed are its 10/50/90 % spread and how much it changes from
one evaluated frame to the next (users see that change as the scene "breathing").

    .venv/bin/python tools/confidence_check.py [MODEL.onnx] [--data DIR] [--frames 250:373] [--every 3]
        [--by-group]   (a table per frame group, e.g. real_eval's places)
        [--keep 0.32 0.35]   (pixels pooled over the frames: confidence percentiles, and the
                              share kept and its AbsRel at each threshold, as min_confidence)
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
from reflector_ros.train.evaluate import frame_scale, scale_stats  # noqa: E402
from reflector_ros.train.metrics import confidence_split, valid_mask  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hololens_office"


def main() -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("model", nargs="?", default=None, help="default: the embedded model")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--frames", default="250:373")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--by-group", action="store_true", help="also a table of the ranking per frame group")
    p.add_argument("--keep", type=float, nargs="+", default=[], metavar="T",
                   help="confidence thresholds in [0, 1]: share of pixels kept and their AbsRel")
    a = p.parse_args()
    if not all(0.0 <= t <= 1.0 for t in a.keep):
        p.error(f"--keep thresholds must be in [0, 1], got {a.keep}")
    try:
        pipeline = DepthPipeline(make_backend("onnxruntime", a.model))
        ds = ManifestDataset(a.data, a.frames)
    except (OSError, ValueError) as exc:  # InputError is a ValueError
        print(f"confidence_check: {exc}", file=sys.stderr)
        return 2
    every_px, confident, spread, scale, groups = [], [], [], [], []
    pooled_err, pooled_conf = [], []
    for i in range(0, len(ds), max(1, a.every)):
        s = ds[i]
        r = pipeline.process(s.image, s.camera, FrameSettings())
        ok = (s.depth > 0) & np.isfinite(r.depth)
        all_px, half, width = confidence_split(r.depth, r.confidence, s.depth)
        every_px.append(all_px)
        confident.append(half)
        spread.append(width)
        scale.append(frame_scale(r.depth, s.depth, valid_mask(s.depth, 1e-3, 10.0)))   # as eval and anchor_check
        groups.append(s.group)
        if a.keep:
            pooled_err.append(np.abs(r.depth[ok] - s.depth[ok]) / s.depth[ok])
            pooled_conf.append(r.confidence[ok])
    print(f"{a.model or 'embedded model'} on {a.data} [{a.frames}] every {a.every}: AbsRel all pixels "
          f"{np.mean(every_px):.3f}, most confident half {np.mean(confident):.3f} "
          f"({100 * (1 - np.mean(confident) / np.mean(every_px)):.1f} % lower), "
          f"confidence p90-p10 {np.mean(spread):.4f}")
    if a.by_group:
        print("\n| group | frames | AbsRel all | most confident half | lower by |\n|---|---|---|---|---|")
        for g in sorted(set(groups)):
            sel = [k for k, x in enumerate(groups) if x == g]
            e, h = float(np.mean([every_px[k] for k in sel])), float(np.mean([confident[k] for k in sel]))
            print(f"| {g or '-'} | {len(sel)} | {e:.3f} | {h:.3f} | {100 * (1 - h / e):.1f} % |")
        print()
    if a.keep:
        e, c = np.concatenate(pooled_err), np.concatenate(pooled_conf)
        pct = np.percentile(c, [1, 50, 99])
        print(f"confidence over all pixels: p1 {pct[0]:.3f}, p50 {pct[1]:.3f}, p99 {pct[2]:.3f}; "
              f"AbsRel of all pixels pooled {e.mean():.3f}")
        for t in a.keep:
            k = c >= t
            print(f"  confidence >= {t:g}: keeps {100 * k.mean():.0f} % of the pixels, AbsRel "
                  + (f"{e[k].mean():.3f}" if k.any() else "-"))
    st = scale_stats(scale)
    print(f"scale (median predicted / median true depth per frame): p10 {st['p10']:.3f}, p50 {st['median']:.3f}, "
          f"p90 {st['p90']:.3f}; median change from one evaluated frame to the next "
          f"{100 * st['frame_to_frame']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
