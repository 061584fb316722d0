"""Real-data check of the self-supervised stage (issue 13), before and after, in one command.

1. ``reflector eval`` of the starting model on HoloLens frames 250-372 (with depth),
   including the per-frame scale s = median(predicted) / median(true) that it reports;
2. ``reflector train`` with config/train_selfsup_hololens.yaml from that model: frames
   0-249, RGB and poses.txt only (the stage never reads their depth);
3. the same evaluation of the run's *last* checkpoint (``latest.pt``; ``best.pt`` is chosen
   on frames 250-372, so it would be selected on the test frames);
4. the same two evaluations on frames 0-249, the frames the stage trained on (their depth
   read only for this), which is what a robot gets in the rooms it recorded;
5. a table: AbsRel, delta1, median-scaled AbsRel, the scale's median, its 10-90 % spread
   and its median change from frame to frame, and whether AbsRel improved by >= 20 % with the scale
   closer to 1.

    .venv/bin/python tools/selfsup_check.py --init reflector_ros/weights/reflector_small.pt \\
        --out runs/selfsup_check --minutes 30
    .venv/bin/python tools/selfsup_check.py --init MODEL.pt --out runs/x --steps 5 train.eval_every=5   # smoke run
    .venv/bin/python tools/selfsup_check.py --init MODEL.pt --out runs/tta --train-frames 250:373 --steps 1500

The last one is test-time adaptation, not the issue's check: the stage trains on the
evaluated frames' own RGB and poses (never their depth), as a robot would on a recording
of the rooms it works in.

Trailing ``section.key=value`` arguments go to ``reflector train``. Writes
OUT/summary.json and OUT/summary.md. ../shared/data/real_eval is never touched.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from reflector_ros.data.manifest import ManifestDataset, parse_indices  # noqa: E402
HOLO = REPO.parent / "shared" / "data" / "hololens_office"
CONFIG = REPO / "config" / "train_selfsup_hololens.yaml"
TEST_FRAMES = "250:373"
SEEN_FRAMES = "0:250"


def cli(*argv: str) -> None:
    """One `reflector` command in this interpreter; its output passes through."""
    cmd = [sys.executable, "-m", "reflector_ros.cli", *argv]
    print("+ reflector " + " ".join(argv), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def evaluate(model: Path, out: Path, tag: str, frames: str = TEST_FRAMES) -> dict[str, float]:
    spec = f"manifest:{HOLO}?frames={frames}"
    js = out / f"{tag}_eval.json"
    cli("eval", "--model", str(model), "--backend", "torch-cpu", "--data", spec, "--median-scale", "--json", str(js))
    res = next(iter(json.loads(js.read_text())["sets"].values()))
    scale = res.get("scale") or {}
    nan = float("nan")
    row = {"abs_rel": res["metric"]["abs_rel"], "d1": res["metric"]["d1"],
           "median_scaled_abs_rel": res["median_scaled"]["abs_rel"], "scale_median": scale.get("median", nan),
           "scale_p10": scale.get("p10", nan), "scale_p90": scale.get("p90", nan),
           "scale_frame_to_frame": scale.get("frame_to_frame", nan)}
    (out / f"{tag}_summary.json").write_text(json.dumps(row, indent=1))
    return row


def table(rows: dict[str, dict[str, float]]) -> str:
    head = "| model | AbsRel | δ1 | median-scaled AbsRel | scale median | scale 10–90 % | scale change frame to frame |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['abs_rel']:.3f} | {r['d1']:.3f} | {r['median_scaled_abs_rel']:.3f} | "
                     f"{r['scale_median']:.3f} | {r['scale_p10']:.2f}–{r['scale_p90']:.2f} | {100 * r['scale_frame_to_frame']:.1f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", required=True, type=Path, help="starting checkpoint (.pt)")
    p.add_argument("--out", required=True, type=Path, help="folder for the run and the results")
    p.add_argument("--minutes", type=float, default=0.0, help="training wall-clock budget (--time-budget)")
    p.add_argument("--steps", type=int, default=0, help="training steps (train.steps); with --minutes: a cap")
    p.add_argument("--skip-train", action="store_true", help="evaluate OUT/run/latest.pt as it is")
    p.add_argument("--train-frames", default=SEEN_FRAMES,
                   help=f"HoloLens frames the stage trains on (default {SEEN_FRAMES}, the issue's check); "
                        f"{TEST_FRAMES}: test-time adaptation, the robot's own rooms")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="passed to reflector train")
    args = p.parse_args(argv)
    if "real_eval" in " ".join([str(args.init), *args.overrides]):
        p.error("../shared/data/real_eval is for evaluation only; it has no place in this check")
    if not (HOLO / "poses.txt").is_file():
        p.error(f"{HOLO} (with poses.txt) not found")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    before = evaluate(args.init.resolve(), out, "before")
    run = out / "run"
    if not args.skip_train:
        train = ["train", "--config", str(CONFIG), "--init", str(args.init.resolve()), "--out", str(run)]
        if args.minutes:
            train += ["--time-budget", str(args.minutes)]
        if args.steps:
            train += ["--steps", str(args.steps)]
        seq = f'selfsup.sequences=[{{spec: "manifest:{HOLO}?frames={args.train_frames}"}}]'
        cli(*train, seq, *args.overrides)
    after = evaluate(run / "latest.pt", out, "after")
    rows = {f"start ({args.init.name})": before, "after selfsup (latest.pt)": after}
    # the frames the stage trained on (their depth read only here, for evaluation): what a
    # robot gets in the rooms it recorded
    n = len(ManifestDataset(HOLO))
    adapted = bool(set(parse_indices(args.train_frames, n)) & set(parse_indices(TEST_FRAMES, n)))
    seen = {} if adapted else {
        f"start ({args.init.name})": evaluate(args.init.resolve(), out, "before_seen", args.train_frames),
        "after selfsup (latest.pt)": evaluate(run / "latest.pt", out, "after_seen", args.train_frames)}
    gain = 1 - after["abs_rel"] / before["abs_rel"]
    toward = abs(math.log(after["scale_median"])) < abs(math.log(before["scale_median"]))
    verdict = (f"AbsRel {before['abs_rel']:.3f} -> {after['abs_rel']:.3f} ({abs(100 * gain):.1f} % {'better' if gain >= 0 else 'worse'}; target >= 20 % better), "
               f"median scale {before['scale_median']:.3f} -> {after['scale_median']:.3f} "
               f"({'toward' if toward else 'away from'} 1): {'MET' if gain >= 0.2 and toward else 'NOT MET'}")
    if adapted:
        verdict = verdict.rsplit(": ", 1)[0] + (f": test-time adaptation (the stage trained on frames "
                                                f"{args.train_frames}, which overlap the evaluated ones, from RGB "
                                                f"and poses), not the issue's held-out check")
        title = f"HoloLens frames {TEST_FRAMES} (selfsup trained on {args.train_frames}, RGB + poses only)"
    else:
        title = f"HoloLens frames {TEST_FRAMES} (held out; selfsup trained on {args.train_frames}, RGB + poses only)"
    md = f"{title}\n\n{table(rows)}\n\n{verdict}\n"
    if seen:
        md += (f"\nHoloLens frames {args.train_frames} (the frames selfsup trained on; their depth is read only "
               f"for this evaluation)\n\n{table(seen)}\n")
    print("\n" + md)
    (out / "summary.md").write_text(md)
    (out / "summary.json").write_text(json.dumps({"before": before, "after": after, "seen_frames": seen,
                                                  "abs_rel_gain": gain,
                                                   "scale_toward_1": bool(toward)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
