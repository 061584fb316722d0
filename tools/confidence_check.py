"""Does the confidence output rank pixels by error? AbsRel of all valid pixels vs of the
most confident half (per frame, averaged), and the per-frame 10-90 % confidence spread.

Also: how steady is the metric scale over a sequence? Per frame, the median ratio of
predicted to true depth; printed are its 10/50/90 % spread and how much it changes from
one evaluated frame to the next (users see that change as the scene "breathing").

    .venv/bin/python tools/confidence_check.py [MODEL.onnx] [--data DIR] [--frames 250:373] [--every 3]
        [--by-group]   (a table per frame group, e.g. real_eval's places)
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
from reflector_ros.train.evaluate import scale_stats  # noqa: E402
from reflector_ros.train.metrics import confidence_split  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hololens_office"


def main() -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("model", nargs="?", default=None, help="default: the embedded model")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--frames", default="250:373")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--by-group", action="store_true", help="also a table of the ranking per frame group")
    a = p.parse_args()
    try:
        pipeline = DepthPipeline(make_backend("onnxruntime", a.model))
        ds = ManifestDataset(a.data, a.frames)
    except (OSError, ValueError) as exc:  # InputError is a ValueError
        print(f"confidence_check: {exc}", file=sys.stderr)
        return 2
    every_px, confident, spread, scale, groups = [], [], [], [], []
    for i in range(0, len(ds), max(1, a.every)):
        s = ds[i]
        r = pipeline.process(s.image, s.camera, FrameSettings())
        ok = (s.depth > 0) & np.isfinite(r.depth)
        all_px, half, width = confidence_split(r.depth, r.confidence, s.depth)
        every_px.append(all_px)
        confident.append(half)
        spread.append(width)
        scale.append(np.median(r.depth[ok] / s.depth[ok]))
        groups.append(s.group)
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
    st = scale_stats(scale)
    print(f"scale (median predicted / true depth per frame): p10 {st['p10']:.3f}, p50 {st['median']:.3f}, "
          f"p90 {st['p90']:.3f}; median change from one evaluated frame to the next "
          f"{100 * st['frame_to_frame']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
