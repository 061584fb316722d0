"""`reflector eval`: a model (or a baseline) on depth datasets, with the published protocol.

Numbers in the docs and the README come from here, so every figure is reproducible with one
command. The scoring itself is ``train.evaluate.evaluate_dataset``, shared with training's
validation and the demo.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reflector_ros.commands import Once
from reflector_ros.core.errors import InputError
from reflector_ros.data.sample import Sample
from reflector_ros.train.evaluate import backend_predictor, evaluate_dataset, focal_ratios, mean_of_groups
from reflector_ros.train.metrics import markdown_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action=Once, help="model file (.onnx, .pt, .engine); default: the embedded model")
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


def frame_groups(ds: Sequence[Sample]) -> list[str] | None:
    """Each frame's group, read from a manifest without loading any image; None for sets
    that do not list them (their groups are known only frame by frame)."""
    from reflector_ros.data.registry import Subset

    if isinstance(ds, Subset):
        base = frame_groups(ds.base)
        return None if base is None else [base[i] for i in ds.indices]
    frames = getattr(ds, "frames", None)       # ManifestDataset
    if isinstance(frames, list) and all(isinstance(f, dict) for f in frames):
        return [str(f.get("group", "")) for f in frames]
    return None


def keep_groups(spec: str, ds: Sequence[Sample], groups: str) -> Sequence[Sample]:
    """The frames of the --groups asked for, before any is scored (so --limit spreads over
    them, and a misspelt group is refused at once); InputError for a group with no frame."""
    from reflector_ros.data.registry import Subset

    have = frame_groups(ds)
    if have is None:
        return ds
    keep = [g.strip() for g in groups.split(",")]
    missing = [g for g in keep if g not in set(have)]
    if missing:
        raise InputError(f"{spec}: no frames in group(s) {missing}; groups: {sorted(set(have))}")
    return Subset(ds, [i for i, g in enumerate(have) if g in keep])


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
        if args.by_group and args.groups:
            sets = [(spec, keep_groups(spec, ds, args.groups), defaults) for spec, ds, defaults in sets]
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
