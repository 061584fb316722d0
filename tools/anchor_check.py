"""The floor scale anchor on real frames: HoloLens 250-372, with and without the anchor.

The sequence's poses (camera-to-world) and ground-truth depth give the floor plane once, in
world coordinates (RANSAC over every frame's back-projected ground truth, normal near the
cameras' mean up direction, the lowest large plane), and so each frame's true camera height.
Each frame's height is fed to the anchor (a robot would use one constant), and, in the third
variant, each frame's true up direction with ``normal: expected`` (a robot's fixed mount gives
it through pitch_deg and roll_deg; this head-mounted camera's attitude changes). Printed, with and
without the anchor: AbsRel and delta1 (reflector eval's metrics), the per-frame scale
(median predicted / true depth) p10-p90, and its median change between consecutive frames;
over all frames and over the frames whose lower half shows the floor.

    .venv/bin/python tools/anchor_check.py [--model M] [--frames 250:373] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reflector_ros.backends import make_backend  # noqa: E402
from reflector_ros.core.scale_anchor import AnchorSettings  # noqa: E402
from reflector_ros.data.manifest import ManifestDataset  # noqa: E402
from reflector_ros.pipeline import DepthPipeline, FrameSettings  # noqa: E402
from reflector_ros.train.evaluate import frame_scale, scale_stats  # noqa: E402
from reflector_ros.train.metrics import depth_metrics, mean_metrics, valid_mask  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hololens_office"


def world_points(depth: np.ndarray, cam, pose: np.ndarray, step: int = 8) -> np.ndarray:
    """(n, 3) world points of a depth map's valid pixels on a grid (camera-to-world pose)."""
    v, u = np.mgrid[0:depth.shape[0]:step, 0:depth.shape[1]:step]
    z = depth[v, u]
    ok = z > 0
    p = np.stack([(u[ok] - cam.cx) / cam.fx * z[ok], (v[ok] - cam.cy) / cam.fy * z[ok], z[ok]], axis=1)
    return p @ pose[:3, :3].T + pose[:3, 3]


def floor_plane(points: np.ndarray, up: np.ndarray, iters: int = 400, tol: float = 0.03,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
    """(n, d) with n·x + d = 0, n pointing up: among planes within 20 degrees of ``up`` with
    at least 30 % of the best one's inliers, the lowest (the floor, not a table top)."""
    rng = rng or np.random.default_rng(0)
    cands = []
    for _ in range(iters):
        a, b, c = points[rng.integers(0, len(points), 3)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-9:
            continue
        n /= np.linalg.norm(n)
        n = n if n @ up > 0 else -n
        if n @ up < np.cos(np.radians(20)):
            continue
        d = -n @ a
        cands.append((int((np.abs(points @ n + d) < tol).sum()), n, d))
    best = max(c[0] for c in cands)
    lowest = max((c for c in cands if c[0] >= 0.3 * best), key=lambda c: c[2])   # largest d: lowest plane
    n, d = lowest[1], lowest[2]
    inl = points[np.abs(points @ n + d) < tol]
    centre = inl.mean(axis=0)
    n = np.linalg.svd(inl - centre, full_matrices=False)[2][2]
    n = n if n @ up > 0 else -n
    return n, float(-n @ centre)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--frames", default="250:373")
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second of the sequence (the hold uses it)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    root = Path(a.data)
    poses_all = np.loadtxt(root / "poses.txt").reshape(-1, 4, 4)
    ds = ManifestDataset(root, a.frames)
    start = int(a.frames.split(":")[0] or 0)
    poses = poses_all[start:start + len(ds)]
    samples = [ds[i] for i in range(len(ds))]
    up = -poses[:, :3, 1].mean(axis=0)                      # the cameras' mean up (-y of the optical frame)
    up /= np.linalg.norm(up)
    pts = np.concatenate([world_points(s.depth, s.camera, T) for s, T in zip(samples, poses)])
    n, d = floor_plane(pts, up)
    heights = poses[:, :3, 3] @ n + d
    print(f"floor plane from {len(pts)} ground-truth points: camera heights {heights.min():.2f}-{heights.max():.2f} m "
          f"(median {np.median(heights):.2f})")
    floor_in_view = []
    for s, T in zip(samples, poses):
        lower = s.depth.copy()
        lower[: s.depth.shape[0] // 2] = 0
        wp = world_points(lower, s.camera, T, step=4)
        floor_in_view.append(len(wp) > 0 and float((np.abs(wp @ n + d) < 0.05).mean()) > 0.1)
    floor_in_view = np.array(floor_in_view)

    pipe = DepthPipeline(make_backend(a.backend, a.model))
    # the camera's true up per frame (the world floor normal in its optical frame): what a
    # robot's fixed mount gives through pitch_deg and roll_deg; this head-mounted camera's changes
    ups = np.einsum("kji,j->ki", poses[:, :3, :3], n)
    fitted = AnchorSettings(mode="floor", camera_height=float(heights[0]), normal="fitted")
    expected = AnchorSettings(mode="floor", camera_height=float(heights[0]), normal="expected")
    variants = {"network's own scale": (FrameSettings(), False),
                "floor anchor, fitted normal, true height per frame": (FrameSettings(anchor=fitted), False),
                "floor anchor, expected up, true height and up per frame": (FrameSettings(anchor=expected), True)}
    results: dict[str, dict] = {}
    for name, (settings, give_up) in variants.items():
        pipe.restarted()
        rows, scales, sources, raws = [], [], [], []
        for i, s in enumerate(samples):
            res = pipe.process(s.image, s.camera, settings, t=i / a.rate, camera_height=float(heights[i]),
                               camera_up=ups[i] if give_up else None)
            mask = valid_mask(s.depth, 1e-3, 10.0)
            rows.append(depth_metrics(res.depth, s.depth, mask))
            scales.append(frame_scale(res.depth, s.depth, mask))
            sources.append(res.anchor.source if res.anchor else "model")
            raws.append(res.anchor.raw_scale if res.anchor and res.anchor.source == "floor" else float("nan"))
        entry = {}
        for part, keep in (("all frames", np.ones(len(rows), bool)), ("floor in view", floor_in_view)):
            sel = [r for r, k in zip(rows, keep) if k]
            m = mean_metrics(sel)
            entry[part] = {"n": len(sel), "abs_rel": m["abs_rel"], "d1": m["d1"],
                           "scale": scale_stats([v for v, k in zip(scales, keep) if k])}
        entry["sources"] = {src: sources.count(src) for src in set(sources)}
        if name != "network's own scale":
            # each frame whose floor was accepted, scaled by its own fit alone (no window, no
            # hold): how right the floor is where it is found
            own = [net * raw for net, raw in zip(results["network's own scale"]["scales"], raws) if np.isfinite(raw)]
            entry["own floor fit"] = scale_stats(own) if own else {}
            found = np.isfinite(raws)
            entry["found frames"] = {"n": int(found.sum()),
                                     "abs_rel": mean_metrics([r for r, k in zip(rows, found) if k])["abs_rel"] if found.any() else None,
                                     "network abs_rel": mean_metrics([r for r, k in zip(results["network's own scale"]["rows"], found) if k])["abs_rel"] if found.any() else None}
        entry["scales"], entry["rows"] = scales, rows
        results[name] = entry
    print(f"\nmodel: {a.model or 'embedded default'}; HoloLens frames {a.frames} "
          f"({int(floor_in_view.sum())} of {len(samples)} with the floor in the lower half)\n")
    print("| variant | frames | AbsRel | δ1 | scale p10–p90 | median frame-to-frame scale change |")
    print("|---|---|---|---|---|---|")
    for name, entry in results.items():
        for part in ("all frames", "floor in view"):
            e = entry[part]
            sc = e["scale"]
            print(f"| {name} | {part} ({e['n']}) | {e['abs_rel']:.3f} | {e['d1']:.3f} | "
                  f"{sc['p10']:.2f}–{sc['p90']:.2f} | {100 * sc['frame_to_frame']:.1f} % |")
    for name, entry in results.items():
        if name != "network's own scale":
            print(f"anchor sources per frame, {name}: {entry['sources']}")
            own = entry["own floor fit"]
            if own:
                print(f"  the frames whose floor was found, each scaled by its own fit: scale median {own['median']:.3f}, "
                      f"p10-p90 {own['p10']:.2f}-{own['p90']:.2f}, change between consecutive such frames "
                      f"{100 * own['frame_to_frame']:.1f} %; AbsRel on them {entry['found frames']['abs_rel']:.3f} "
                      f"(network's own scale {entry['found frames']['network abs_rel']:.3f})")
    if a.json:
        for entry in results.values():
            del entry["rows"]
        Path(a.json).write_text(json.dumps({"heights": heights.tolist(), "floor_in_view": floor_in_view.tolist(),
                                            "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
