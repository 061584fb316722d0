"""The default model's end-to-end stage at GPU scale, as one prepared run for a lent GPU.

The `device` tool sometimes lends an H100/H200 (16 CPU cores, no TensorRT, nothing
reachable from it) for about 15 minutes a task, start-up included, at most 10 minutes a
command. That is one shot, so everything it needs is made here first and the run
itself is one command that cannot ask for anything:

    # here: HoloLens frames at the network's canonical scale (~3x fewer pixels, so the
    # frames fit in the 64 MiB the device takes with the repository); prints the size
    .venv/bin/python tools/device_train.py prepare
    # there (device tool `run`, carry [".device"], timeout_s 600):
    PYTHONUNBUFFERED=1 python3 tools/device_train.py run --out "$OUT" --minutes 9
    # here again: the stages that are cheap on a CPU, then export (docs/model.md recipe 4-5)
    reflector train --config config/train_context.yaml --init /work/.device/.../best.pt --out runs/context_gpu
    reflector train --config config/train_confidence.yaml --init runs/context_gpu/latest.pt --out runs/confidence_gpu

``run`` renders the synthetic sets with every core, trains stage end2end from the
shipped model (config/train_lite0.yaml: HoloLens 0-249 + synthetic rooms + close
views; frames 250-372 and synthetic validation scenes choose the checkpoint) with AMP,
a larger batch and a learning-rate schedule fitted into the time left, evaluates the
result on HoloLens 250-372 at canonical scale, and leaves under --out at most 8 files
(the device returns 8, 16 MB each): best.pt and latest.pt weights-only, metrics.jsonl,
learning_curves.png, eval.json, summary.json and the log. ``real_eval`` never travels.

``--smoke`` runs the same path at toy sizes on any machine (the test suite does).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
HOLO = REPO.parent / "shared" / "data" / "hololens_office"
DEST = REPO / ".device"
TRAIN_FRAMES, VAL_FRAMES = "0:250", "250:373"
DEVICE_TREE_LIMIT = int(float(os.environ.get("REFLECTOR_DEVICE_LIMIT_MIB", "64")) * 2**20)  # what may travel
MAX_OUT_FILES = 8


def _say(msg: str) -> None:
    print(f"[device_train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def folder_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def travel_bytes() -> int:
    """Bytes of what always travels to the device: tracked files, and untracked ones git does
    not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    return sum((REPO / p).stat().st_size for p in set(out.decode().split("\0")) if p and (REPO / p).is_file())


def prepare(src: Path, dest: Path, train: str, val: str, model: str) -> int:
    """Write ``src``'s ``train`` then ``val`` frames (a manifest folder; START:STOP[:STEP])
    resized to the network input of ``model``'s camera rule, as training resizes them
    (``augment.to_network_scale``: f_c / f, area for colour, nearest for depth), to ``dest``
    as one manifest folder, with ``split.json`` saying which of its frames are which.
    Training on the copy then resizes nothing. Colour is re-encoded as JPEG q95; depth is
    the same millimetres, PNG at the highest compression (the size limit is tight)."""
    import cv2
    from tqdm import tqdm

    from reflector_ros.data.manifest import ManifestDataset, parse_indices, write_manifest
    from reflector_ros.model.reflector import load_checkpoint
    from reflector_ros.train.augment import to_network_scale

    src, dest = src.resolve(), dest.resolve()
    if dest == src or src in dest.parents or dest in src.parents:
        print(f"prepare: --dest {dest} overlaps --src {src}; give a folder of its own", file=sys.stderr)
        return 2
    if dest.exists() and any(dest.iterdir()) and not (dest / "split.json").exists():
        print(f"prepare: --dest {dest} holds other files (no split.json of an earlier prepare); not replacing it",
              file=sys.stderr)
        return 2
    _, meta, _ = load_checkpoint(model)
    ds = ManifestDataset(src)
    parts = [parse_indices(train, len(ds)), parse_indices(val, len(ds))]
    idx = parts[0] + parts[1]
    samples = (to_network_scale(ds[i], meta) for i in tqdm(idx, desc="canonical scale", unit="frame"))
    if dest.exists():
        shutil.rmtree(dest)
    write_manifest(dest, samples, f"{ds.name}, frames {train} and {val} at network scale "
                                  f"(f_c {meta.focal_canonical:g} px)")
    for f in (dest / "depth").glob("*.png"):
        depth = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        f.write_bytes(cv2.imencode(".png", depth, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes())
    if (src / "poses.txt").exists():
        rows = (src / "poses.txt").read_text().splitlines()
        (dest / "poses.txt").write_text("\n".join(rows[i] for i in idx) + "\n")
    n = len(parts[0])
    (dest / "split.json").write_text(json.dumps({"train": f"0:{n}", "val": f"{n}:{len(idx)}",
                                                 "source": str(src), "source_train": train, "source_val": val}))
    size = folder_bytes(dest)
    _say(f"{len(idx)} frames -> {dest} ({size / 2**20:.1f} MiB)")
    if REPO not in dest.parents:
        _say(f"note: {dest} is outside the repository; the device takes only the repository and folders in it "
             f"named in `carry`")
        return 0
    carried = REPO / dest.relative_to(REPO).parts[0]          # the folder named in carry, e.g. .device
    total = travel_bytes() + folder_bytes(carried)
    _say(f"with the repository's files, carrying {carried.name}: {total / 2**20:.1f} of the device's "
         f"{DEVICE_TREE_LIMIT / 2**20:.0f} MiB")
    if total > DEVICE_TREE_LIMIT:
        _say("too large to travel: prepare fewer frames (--val with a larger step), or clear other files from "
             f"{carried}")
        return 1
    return 0


def cli(log, *argv: str) -> None:
    """One `reflector` command in this interpreter, its output to the console and the log."""
    cmd = [sys.executable, "-m", "reflector_ros.cli", *argv]
    _say("+ reflector " + " ".join(argv))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        log.write(line)
    if proc.wait() != 0:
        raise SystemExit(f"reflector {argv[0]} failed (exit {proc.returncode})")


def weights_only(src: Path, dst: Path) -> None:
    from reflector_ros.model.reflector import load_checkpoint, save_checkpoint

    model, meta, _ = load_checkpoint(src)
    save_checkpoint(dst, model, meta)


def run(args: argparse.Namespace) -> int:
    """Render, train, collect, evaluate; 0 when training ended by its time budget, 1 when
    it failed (whatever checkpoint it wrote is still collected), 2 when nothing could run."""
    t0 = time.time()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() / ("smoke" if args.smoke else "full")   # each with its own synthetic sets
    work.mkdir(parents=True, exist_ok=True)
    holo = Path(args.data).resolve()
    if not (holo / "split.json").exists():
        print(f"run: {holo} is not a prepared folder (no split.json); run `tools/device_train.py prepare` here "
              f"and carry .device", file=sys.stderr)
        return 2
    split = json.loads((holo / "split.json").read_text())
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not (args.smoke or args.allow_cpu):
        print("run: no CUDA device; this command is the GPU run (--smoke or --allow-cpu to run it anyway)",
              file=sys.stderr)
        return 2
    cores = os.cpu_count() or 2
    _say(f"torch {torch.__version__}, {'GPU ' + torch.cuda.get_device_name(0) if cuda else 'no GPU'}, {cores} cores")
    summary: dict = {"batch": args.batch, "lr": args.lr, "synth_count": args.synth_count, "init": args.init,
                     "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if cuda else None}
    log = (out / "log.txt").open("w", buffering=1)
    workers = max(1, cores - 2) if args.workers <= 0 else args.workers
    summary["workers"] = workers
    h, w = args.synth_size
    sets = {"synth": (args.synth_count, 0, 0.0), "synth_close": (args.synth_count // 8, 20_000_000, 1.0),
            "synth_val": (max(2, args.synth_count // 40), 10_000_000, 0.0)}
    for name, (count, seed, close) in sets.items():
        cli(log, "synth", "--out", str(work / name), "--count", str(count), "--seed", str(seed), "--height", str(h),
            "--width", str(w), "--workers", str(workers), "--close-fraction", str(close), "--preview", "0")
    _say(f"synthetic sets rendered in {time.time() - t0:.0f} s")

    run_dir = work / "run"
    if run_dir.exists():            # a retry: nothing of an earlier run may pass for this one's
        shutil.rmtree(run_dir)
    train_spec = [{"spec": f"manifest:{holo}?frames={split['train']}", "weight": 1.0},
                  {"spec": f"manifest:{work / 'synth'}", "weight": 1.5},
                  {"spec": f"manifest:{work / 'synth_close'}", "weight": 0.75}]
    val_spec = {"hololens_val": f"manifest:{holo}?frames={split['val']}", "synthetic": f"manifest:{work / 'synth_val'}"}
    # the trainer's budget counts its loop only: its start-up (imports, model, data, the step-0
    # evaluation, loader workers) and what follows it come out of --startup and --reserve
    left = args.minutes - (time.time() - t0) / 60.0 - args.reserve - args.startup
    if left <= 0.05:
        print(f"run: no time left to train after rendering ({args.minutes} min in all; {args.startup} for the "
              f"trainer's start-up and {args.reserve} after it kept)", file=sys.stderr)
        return 2
    train_argv = ["train", "--config", str(REPO / "config" / "train_lite0.yaml"), "--init", args.init,
                  "--out", str(run_dir), "--time-budget", f"{left:.2f}", "--steps", str(args.max_steps),
                  f"data.train={json.dumps(train_spec)}", f"data.val={json.dumps(val_spec)}",
                  f"data.workers={workers}", f"data.val_frames={args.val_frames}",
                  f"train.batch_size={args.batch}", f"train.lr={args.lr}", f"train.eval_every={args.eval_every}",
                  f"train.threads={min(8, cores)}", "train.ckpt_every=100", f"train.amp_dtype={args.amp_dtype}",
                  *args.overrides]
    failed = None
    try:
        cli(log, *train_argv)
    except SystemExit as exc:      # one shot: bring back whatever this run reached, and say so
        failed = str(exc)
        _say(f"{exc}; collecting what it wrote")
    summary["training_error"] = failed

    for name in ("best.pt", "latest.pt"):
        if (run_dir / name).exists():
            weights_only(run_dir / name, out / name)
    for name in ("metrics.jsonl", "learning_curves.png"):
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, out / name)
    rows = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    summary["steps"] = max([json.loads(x)["step"] for x in rows if x.strip()], default=0)
    best = next((out / n for n in ("best.pt", "latest.pt") if (out / n).exists()), None)
    minutes_left = args.minutes - (time.time() - t0) / 60.0
    summary["eval"] = None
    if best is None:
        summary["eval"] = "no checkpoint to evaluate"
    elif minutes_left < 0.4:
        summary["eval"] = f"skipped: {minutes_left:.2f} min left"
    else:
        try:
            cli(log, "eval", "--model", str(best), "--backend", "torch-cuda" if cuda else "torch-cpu", "--data",
                f"manifest:{holo}?frames={split['val']}", "--median-scale", "--json", str(out / "eval.json"))
            summary["eval"] = (f"{best.name} on HoloLens frames {split['source_val']} at canonical scale (the "
                               f"prepared copy); rerun reflector eval on the original frames for figures to report")
        except SystemExit as exc:
            summary["eval"] = f"failed: {exc}"
    summary["minutes"] = round((time.time() - t0) / 60.0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log.close()
    files = sorted(p.name for p in out.iterdir())
    if len(files) > MAX_OUT_FILES:
        _say(f"warning: {len(files)} files under {out}; the device returns {MAX_OUT_FILES}")
    _say(f"{'training FAILED' if failed else 'done'} in {summary['minutes']} min, {summary['steps']} steps: "
         f"{', '.join(files)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="here: HoloLens frames at network scale under .device/hololens")
    pp.add_argument("--src", default=str(HOLO), help="manifest folder (default: ../shared/data/hololens_office)")
    pp.add_argument("--dest", default=str(DEST / "hololens"))
    pp.add_argument("--train", default=TRAIN_FRAMES, help="source frames to train on, START:STOP[:STEP]")
    pp.add_argument("--val", default=VAL_FRAMES + ":3", help="source frames that choose the checkpoint")
    pp.add_argument("--model", default=str(REPO / "reflector_ros" / "weights" / "reflector_small.pt"),
                    help="checkpoint whose camera rule sets the scale")
    pr = sub.add_parser("run", help="on the device: render, train, evaluate, collect under --out")
    pr.add_argument("--out", required=True, help="where the results go ($OUT on the device)")
    pr.add_argument("--data", default=str(DEST / "hololens"), help="the prepared HoloLens folder")
    pr.add_argument("--work", default="/tmp/reflector_device", help="scratch: synthetic sets and the run folder")
    pr.add_argument("--init", default=str(REPO / "reflector_ros" / "weights" / "reflector_small.pt"))
    pr.add_argument("--minutes", type=float, default=9.0, help="wall clock for everything (the tool allows 10)")
    pr.add_argument("--reserve", type=float, default=0.75,
                    help="minutes kept after training: the trainer's last evaluation, copying, eval")
    pr.add_argument("--startup", type=float, default=1.0,
                    help="minutes allowed for the trainer's start-up (imports, data, step-0 evaluation, workers)")
    pr.add_argument("--allow-cpu", action="store_true", help="run without CUDA (a test of the path, not training)")
    pr.add_argument("--synth-count", type=int, default=12000, help="synthetic rooms (plus 1/8 close views)")
    pr.add_argument("--synth-size", type=int, nargs=2, default=[300, 400], metavar=("H", "W"))
    pr.add_argument("--batch", type=int, default=32)
    pr.add_argument("--lr", type=float, default=3e-4, help="peak rate of the one-cycle schedule (the head's)")
    pr.add_argument("--amp-dtype", default="bfloat16", choices=("bfloat16", "float16"),
                    help="autocast type on the GPU (bfloat16 needs no loss scaling)")
    pr.add_argument("--eval-every", type=int, default=1000)
    pr.add_argument("--val-frames", type=int, default=40)
    pr.add_argument("--max-steps", type=int, default=1_000_000, help="the time budget normally ends the run")
    pr.add_argument("--workers", type=int, default=0, help="loader and renderer processes (0: cores - 2)")
    pr.add_argument("--smoke", action="store_true", help="toy sizes: checks the path on any machine")
    pr.add_argument("overrides", nargs="*", metavar="section.key=value", help="more `reflector train` overrides")
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        try:
            return prepare(Path(args.src), Path(args.dest), args.train, args.val, args.model)
        except (OSError, ValueError) as exc:       # InputError is a ValueError
            print(f"prepare: {exc}", file=sys.stderr)
            return 2
    if args.smoke:
        args.synth_count, args.synth_size, args.batch, args.eval_every, args.val_frames = 16, [96, 128], 2, 2, 2
        args.max_steps, args.reserve, args.startup = 3, 0.0, 0.0
        args.overrides = ["augment.crop_hw=[64, 96]", *args.overrides]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
