"""`reflector train`: train or fine-tune a Reflector model from a YAML config.

Stages (MODEL_NOTES): ``relative`` trains the backbone with the MiDaS losses on
inverse depth; ``metric`` trains the head with SILog on canonical depth; ``end2end``
sums both. Training crops keep the focal length in pixels of the network-resolution
frame, so a 256x320 model learns on 128x160 crops and runs on whole frames.
Runs resume exactly (model, optimiser, schedule, AMP scaler, sample order and
augmentation seeds), use AMP on GPU, and DDP under torchrun.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from reflector_ros.core.errors import InputError

DEFAULTS: dict[str, Any] = {
    "model": {"arch": "small", "input_height": 256, "input_width": 320, "focal_canonical": 300.0,
              "min_depth": 0.1, "max_depth": 20.0, "n_bins": 64},
    "data": {
        "train": [],            # [{spec: "manifest:DIR", weight: 1.0}, ...]
        "epoch_length": 0,      # samples per BalancedMix pass; 0 = sum of dataset lengths
        "workers": 2,
        "val": {},              # {name: spec}
        "val_frames": 100,      # frames per val set, spread evenly
    },
    "augment": {"crop_hw": [128, 160], "scale_range": [1.0, 1.0], "flip": True, "color": True},
    "train": {"stage": "end2end", "steps": 1000, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.01,
              "backbone_lr_mult": 0.1, "freeze_backbone": False, "pct_start": 0.1, "grad_clip": 1.0,
              "amp": True, "seed": 0, "threads": 0, "log_every": 10, "eval_every": 250,
              "ckpt_every": 250},
    "loss": {"ssi": 1.0, "grad": 0.5, "silog": 1.0, "chamfer": 0.0, "rpnl": 0.0, "bin_nll": 0.0},
}
STAGES = ("relative", "metric", "end2end")


# ----------------------------------------------------------------------------- config

def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update; unknown top-level sections are refused so typos surface."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "val":
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """DEFAULTS <- YAML file <- `section.key=value` overrides (values parsed as YAML)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise InputError(f"cannot read config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise InputError(f"{path}: expected a mapping with sections {sorted(DEFAULTS)}")
        unknown = set(doc) - set(DEFAULTS)
        if unknown:
            raise InputError(f"{path}: unknown sections {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        cfg = merge(cfg, doc)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise InputError(f"override {item!r}: expected section.key=value, e.g. train.lr=3e-4")
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise InputError(f"override {item!r}: no section {p!r}")
            node = node[p]
        if parts[-1] not in node and parts[0] != "data":
            raise InputError(f"override {item!r}: unknown key {parts[-1]!r}; known: {sorted(node)}")
        node[parts[-1]] = yaml.safe_load(raw)
    t = cfg["train"]
    if t["stage"] not in STAGES:
        raise InputError(f"train.stage {t['stage']!r}: expected one of {STAGES}")
    for key in ("steps", "batch_size"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise InputError(f"train.{key} must be a positive integer, got {t[key]!r}")
    if not cfg["data"]["train"]:
        raise InputError("config names no training data (data.train: [{spec: ..., weight: ...}])")
    ch, cw = cfg["augment"]["crop_hw"]
    if not (16 <= ch <= 4096 and 16 <= cw <= 4096):
        raise InputError(f"augment.crop_hw {ch}x{cw} out of range")
    return cfg


def meta_from_config(cfg: dict[str, Any]) -> Any:
    from reflector_ros.meta import ModelMeta

    try:
        return ModelMeta.from_dict(cfg["model"])
    except TypeError as exc:
        raise InputError(f"model section: {exc}") from None


# ----------------------------------------------------------------------------- data

def to_network_scale(sample: Any, meta: Any) -> Any:
    """Plain resize of the whole frame to the network input, intrinsics with it.

    After this a crop keeps fx in network pixels, which is what focal_scale needs.
    """
    import cv2

    from reflector_ros.data.sample import Sample

    h, w = sample.depth.shape
    H, W = meta.input_height, meta.input_width
    if (h, w) == (H, W):
        return sample
    sx, sy = W / w, H / h
    rgb = cv2.resize(sample.image, (W, H), interpolation=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR)
    depth = cv2.resize(sample.depth, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)  # centre-aligned, like the intrinsics
    return Sample(rgb, depth, sample.fx * sx, sample.fy * sy, (sample.cx + 0.5) * sx - 0.5,
                  (sample.cy + 0.5) * sy - 0.5, sample.name)


def random_rescale(sample: Any, rng: np.random.Generator, scale_range: tuple[float, float]) -> Any:
    """Zoom by r (log-uniform in scale_range) with fx, fy multiplied by r (Metric3D).

    The canonical target depth / focal_scale shrinks with the zoom, so the network
    must read the magnification from focal_scale, not guess it from the image.
    """
    import cv2

    from reflector_ros.data.sample import Sample

    lo, hi = scale_range
    if hi <= lo:
        return sample
    r = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    h, w = sample.depth.shape
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    sx, sy = nw / w, nh / h
    rgb = cv2.resize(sample.image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    depth = cv2.resize(sample.depth, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
    return Sample(rgb, depth, sample.fx * sx, sample.fy * sy, (sample.cx + 0.5) * sx - 0.5,
                  (sample.cy + 0.5) * sy - 0.5, sample.name)


def random_view(sample: Any, rng: np.random.Generator, crop_hw: tuple[int, int], flip: bool = True,
                color: bool = True) -> Any:
    """Random crop (focal unchanged, principal point shifted), mirror, and colour jitter.

    Geometry stays exact: a crop never rescales, so depth / focal_scale is still the
    right canonical target; a mirror only moves cx. A frame zoomed out below the crop
    size is padded at a random offset (mean colour, depth 0 = invalid, which every loss
    ignores), so every crop of a batch has the same size.
    """
    from reflector_ros.data.sample import Sample

    h, w = sample.depth.shape
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    if h < ch or w < cw:
        py, px = max(0, ch - h), max(0, cw - w)
        top, left = int(rng.integers(0, py + 1)), int(rng.integers(0, px + 1))
        pads = ((top, py - top), (left, px - left))
        fill = sample.image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        image = np.empty((h + py, w + px, 3), np.uint8)
        image[:] = fill
        image[top:top + h, left:left + w] = sample.image
        sample = Sample(image, np.pad(sample.depth, pads), sample.fx, sample.fy, sample.cx + left,
                        sample.cy + top, sample.name)
        h, w = sample.depth.shape
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = sample.image[y0:y0 + ch, x0:x0 + cw]
    depth = sample.depth[y0:y0 + ch, x0:x0 + cw]
    cx, cy = sample.cx - x0, sample.cy - y0
    if flip and rng.random() < 0.5:
        img, depth, cx = img[:, ::-1], depth[:, ::-1], (cw - 1) - cx
    if color:
        f = img.astype(np.float32) * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
        f += rng.uniform(-15, 15)
        mu = f.mean()
        f = (f - mu) * rng.uniform(0.8, 1.2) + mu
        img = np.clip(f, 0, 255).astype(np.uint8)
    return Sample(np.ascontiguousarray(img), np.ascontiguousarray(depth), sample.fx, sample.fy, cx, cy, sample.name)


def make_crop_set(mix: Any, meta: Any, aug: dict[str, Any]) -> Any:
    """Torch dataset over (index, seed) keys: network-scale frame, random view, tensors."""
    import torch

    mean = np.asarray(meta.mean, np.float32)
    std = np.asarray(meta.std, np.float32)
    crop_hw = (int(aug["crop_hw"][0]), int(aug["crop_hw"][1]))
    scale_range = (float(aug["scale_range"][0]), float(aug["scale_range"][1]))
    if not 0.1 <= scale_range[0] <= scale_range[1] <= 4.0:
        raise InputError(f"augment.scale_range {scale_range}: expected 0.1 <= lo <= hi <= 4")

    class CropSet(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(mix)

        def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
            idx, seed = int(key[0]), int(key[1])
            rng = np.random.default_rng(seed)
            s = random_rescale(to_network_scale(mix[idx], meta), rng, scale_range)
            a = random_view(s, rng, crop_hw, bool(aug["flip"]), bool(aug["color"]))
            img = (a.image.astype(np.float32) / 255.0 - mean) / std
            scale = 0.5 * (a.fx + a.fy) / meta.focal_canonical
            return {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
                    "depth": torch.from_numpy(np.ascontiguousarray(a.depth))[None],
                    "focal_scale": torch.tensor(scale, dtype=torch.float32)}
    return CropSet()


def epoch_keys(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """(index, augmentation seed) pairs of one pass for one rank; a pure function of its
    arguments, so a resumed run sees exactly the samples the uninterrupted one would."""
    g = np.random.default_rng([seed, epoch])
    perm = g.permutation(n)
    seeds = g.integers(0, 2**31 - 1, n)
    keys = np.stack([perm, seeds], 1)
    per = n // world
    return keys[rank * per:(rank + 1) * per]


def batches(n: int, batch: int, seed: int, rank: int, world: int, epoch: int, pos: int
            ) -> Iterator[tuple[int, int, list[list[int]]]]:
    """Infinite (epoch, position-after, batch keys) from a given epoch/position."""
    while True:
        keys = epoch_keys(n, seed, epoch, rank, world)
        nb = len(keys) // batch
        if nb == 0:
            raise InputError(f"epoch of {len(keys)} samples per rank is smaller than one batch of {batch}")
        for b in range(pos, nb):
            yield epoch, b + 1, keys[b * batch:(b + 1) * batch].tolist()
        epoch, pos = epoch + 1, 0


class _KeyBatches:
    """Sampler-like iterable the DataLoader draws batch keys from (resumable position)."""

    def __init__(self, it: Iterator[tuple[int, int, list[list[int]]]]) -> None:
        self.it = it
        self.pending: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch, pos, keys in self.it:
            self.pending.append((epoch, pos))
            yield [(int(k[0]), int(k[1])) for k in keys]


def open_train_data(cfg: dict[str, Any], seed: int) -> Any:
    """The training sets mixed by weight (BalancedMix), or the one set as it is."""
    from reflector_ros.data.registry import open_dataset

    sets, weights = [], []
    for item in cfg["data"]["train"]:
        if isinstance(item, str):
            item = {"spec": item}
        sets.append(open_dataset(item["spec"]))
        weights.append(float(item.get("weight", 1.0)))
    length = int(cfg["data"]["epoch_length"]) or sum(len(s) for s in sets)
    if len(sets) == 1 and length == len(sets[0]):
        return sets[0]
    try:
        from reflector_ros.data.mixing import BalancedMix
    except ImportError:  # the data package's mixer is optional here: draw by weight
        return _WeightedDraw(sets, weights, length, seed)
    return BalancedMix(sets, weights, length, seed)


class _WeightedDraw:
    """Item i of `length` comes from set k with probability weight_k, a fixed function of seed."""

    def __init__(self, sets: list[Any], weights: list[float], length: int, seed: int) -> None:
        w = np.asarray(weights, np.float64)
        if len(sets) != len(w) or (w < 0).any() or w.sum() <= 0 or length < 1:
            raise InputError("data.train weights must be >= 0 with a positive sum, and epoch_length >= 1")
        rng = np.random.default_rng([seed, 7])
        self.sets = sets
        self.which = rng.choice(len(sets), size=length, p=w / w.sum())
        self.index = (rng.random(length) * np.array([len(s) for s in sets])[self.which]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.which)

    def __getitem__(self, i: int) -> Any:
        return self.sets[int(self.which[i])][int(self.index[i])]


# ----------------------------------------------------------------------------- losses

def stage_losses(out: dict[str, Any], depth: Any, scale: Any, meta: Any, stage: str,
                 w: dict[str, float], generator: Any = None) -> dict[str, Any]:
    """Loss terms (fp32) for a batch; targets: inverse depth (relative), depth/scale (metric).

    ``generator`` drives the sampled losses (chamfer, RPNL); seeded per step it keeps
    a resumed run identical to an uninterrupted one.
    """
    import torch

    from reflector_ros.model import losses as L

    depth = depth.float()
    s = scale.float().view(-1, 1, 1, 1)
    canon = depth / s
    mask = (depth > 0) & torch.isfinite(depth) & (canon > meta.min_depth) & (canon < meta.max_depth)
    terms: dict[str, Any] = {}
    if stage in ("relative", "end2end"):
        inv = torch.where(mask, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
        rel = out["rel_depth"].float()
        terms["ssi"] = w["ssi"] * L.ssi_loss(rel, inv, mask)
        if w.get("grad"):
            terms["grad"] = w["grad"] * L.gradient_matching_loss(rel, inv, mask)
    if stage in ("metric", "end2end"):
        pred = out["canonical"].float()
        terms["silog"] = w["silog"] * L.silog_loss(pred, canon, mask)
        if w.get("chamfer"):
            terms["chamfer"] = w["chamfer"] * L.chamfer_bins_loss(out["centers"].float(), canon, mask, generator=generator)
        if w.get("rpnl"):
            terms["rpnl"] = w["rpnl"] * L.rpnl_loss(pred, canon, mask, generator=generator)
        if w.get("bin_nll"):
            terms["bin_nll"] = w["bin_nll"] * L.bin_nll_loss(out["centers"], out["probs"], canon, mask)
    return terms


# ----------------------------------------------------------------------------- plots

def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(jsonl: Path, png: Path) -> None:
    """learning_curves.png: train loss, val AbsRel and val δ1 against step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(jsonl)
    tr = [r for r in rows if "loss" in r]
    va = [r for r in rows if "val" in r]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    if tr:
        st = np.array([r["step"] for r in tr])
        lo = np.array([r["loss"] for r in tr])
        ax[0].plot(st, lo, lw=0.6, alpha=0.4, label="train loss")
        k = max(1, len(lo) // 30)
        if len(lo) > k:
            ax[0].plot(st[k - 1:], np.convolve(lo, np.ones(k) / k, mode="valid"), lw=1.5, label=f"mean of {k}")
        ax[0].legend()
    ax[0].set_title("train loss")
    names = sorted({n for r in va for n in r["val"]})
    for n in names:
        pts = [(r["step"], r["val"][n]) for r in va if n in r["val"]]
        ax[1].plot([p[0] for p in pts], [p[1]["abs_rel"] for p in pts], "o-", ms=3, label=n)
        ax[2].plot([p[0] for p in pts], [p[1]["d1"] for p in pts], "o-", ms=3, label=n)
    ax[1].set_title("val AbsRel (lower is better)")
    ax[2].set_title("val δ1 (higher is better)")
    for a in ax:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    if names:
        ax[1].legend()
        ax[2].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="training YAML (see config/train_*.yaml)")
    p.add_argument("--out", default="runs/train", help="run folder: checkpoints, metrics.jsonl, learning_curves.png")
    p.add_argument("--resume", help="checkpoint to continue exactly (optimiser, schedule, data order)")
    p.add_argument("--init", help="checkpoint whose weights start this run (fine-tuning)")
    p.add_argument("--stage", choices=STAGES, help="override train.stage")
    p.add_argument("--steps", type=int, help="override train.steps (total schedule length)")
    p.add_argument("--stop-at", type=int, default=0, help="stop at this step (checkpoint written); resume later")
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after this many minutes (checkpoint written)")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="run the one-cycle LR schedule over this many wall-clock minutes instead of over "
                        "train.steps (which becomes a cap): uses a shared or slow machine fully; "
                        "a resumed run is then not bit-identical")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. train.lr=3e-4")


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def run(args: argparse.Namespace) -> int:
    try:
        return train(args)
    except InputError as exc:
        print(f"reflector train: error: {exc}", file=sys.stderr)
        return 2


def one_cycle_lr(frac: float, max_lr: float, pct: float, div: float = 25.0, final_div: float = 100.0) -> float:
    """The OneCycle cosine shape at progress frac in [0, 1] (time-budget mode)."""
    frac = min(max(frac, 0.0), 1.0)
    lo, end = max_lr / div, max_lr / div / final_div
    if frac < pct:
        return lo + (max_lr - lo) * 0.5 * (1 - math.cos(math.pi * frac / pct))
    return end + (max_lr - end) * 0.5 * (1 + math.cos(math.pi * (frac - pct) / max(1 - pct, 1e-9)))


def _make_scheduler(opt: Any, max_lrs: list[float], total: int, pct: float, done: int) -> Any:
    """OneCycle over `total` steps, fast-forwarded to `done` (lets --steps change on resume)."""
    import torch

    for g, lr in zip(opt.param_groups, max_lrs):
        g["lr"] = lr
        g.pop("initial_lr", None)
        g.pop("max_lr", None)
        g.pop("min_lr", None)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, total_steps=max(total, 2),
                                                pct_start=pct, anneal_strategy="cos",
                                                div_factor=25.0, final_div_factor=100.0)
    import warnings

    with warnings.catch_warnings():  # fast-forwarding steps the schedule without the optimiser
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(min(done, total - 1)):
            sched.step()
    return sched


def train(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from reflector_ros.model.reflector import build_model, load_checkpoint, save_checkpoint
    from reflector_ros.train.evaluate import evaluate_dataset, torch_predictor

    resume_extra: dict[str, Any] | None = None
    if args.resume:
        _, _, resume_extra = load_checkpoint(args.resume)
        if "config" not in resume_extra or "step" not in resume_extra:
            raise InputError(f"{args.resume}: not a training checkpoint (no config/step); use --init to fine-tune from it")
        cfg = _apply_overrides(json.loads(resume_extra["config"]), args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    t = cfg["train"]
    if args.stage:
        t["stage"] = args.stage
    if args.steps:
        t["steps"] = int(args.steps)
    meta = meta_from_config(cfg)

    world, rank, local = _dist_env()
    cuda = torch.cuda.is_available()
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(int(t["threads"]) or max(1, min(4, (os.cpu_count() or 2) // world)))
    main = rank == 0
    out_dir = Path(args.out)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    seed = int(t["seed"])
    torch.manual_seed(seed)
    model = build_model(meta).to(device)
    if args.init and not args.resume:
        init_model, init_meta, _ = load_checkpoint(args.init)
        if init_meta.to_dict() | {"extra": {}} != meta.to_dict() | {"extra": {}}:
            print(f"note: --init model meta differs from the config; using the config's ({meta})", file=sys.stderr)
        model.load_state_dict(init_model.state_dict())
    stage = t["stage"]
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    lr = float(t["lr"])
    if stage == "relative":
        groups, max_lrs = [{"params": backbone}], [lr]
        for p in head:
            p.requires_grad_(False)
    else:
        bb_mult = 0.0 if t["freeze_backbone"] else float(t["backbone_lr_mult"])
        if bb_mult == 0.0:
            for p in backbone:
                p.requires_grad_(False)
            groups, max_lrs = [{"params": head}], [lr]
        else:
            groups, max_lrs = [{"params": backbone}, {"params": head}], [lr * bb_mult, lr]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=float(t["weight_decay"]))
    use_amp = bool(t["amp"]) and cuda
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, epoch, pos = 0, 0, 0
    best = math.inf
    if resume_extra is not None:
        ck_model, _, _ = load_checkpoint(args.resume)
        model.load_state_dict(ck_model.state_dict())
        opt.load_state_dict(resume_extra["optimizer"])
        if "scaler" in resume_extra and use_amp:
            scaler.load_state_dict(resume_extra["scaler"])
        step, epoch, pos = int(resume_extra["step"]), int(resume_extra["epoch"]), int(resume_extra["epoch_pos"])
        best = float(resume_extra.get("best_abs_rel", math.inf))
        torch.set_rng_state(resume_extra["torch_rng"])
    total = int(t["steps"])
    if step >= total:
        print(f"checkpoint is at step {step}, schedule has {total} steps: nothing to do (raise --steps)")
        return 0
    sched = _make_scheduler(opt, max_lrs, total, float(t["pct_start"]), step)
    train_model: Any = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        train_model = DDP(model, device_ids=[local] if cuda else None, find_unused_parameters=stage != "end2end")

    mix = open_train_data(cfg, seed)
    crops = make_crop_set(mix, meta, cfg["augment"])
    key_batches = _KeyBatches(batches(len(mix), int(t["batch_size"]), seed, rank, world, epoch, pos))
    workers = int(cfg["data"]["workers"])
    loader = torch.utils.data.DataLoader(crops, batch_sampler=key_batches, num_workers=workers,
                                         pin_memory=cuda, persistent_workers=False,
                                         prefetch_factor=2 if workers else None)
    val_sets: dict[str, Any] = {}
    if main:
        from reflector_ros.data.registry import dataset_defaults, open_dataset
        for name, spec in (cfg["data"]["val"] or {}).items():
            val_sets[name] = (open_dataset(spec), dataset_defaults(spec))

    jsonl = out_dir / "metrics.jsonl"
    if main and resume_extra is None and jsonl.exists():
        jsonl.unlink()  # a fresh run in an old folder starts a fresh log
    if main and resume_extra is not None:  # drop log lines past the checkpoint (a crash after it)
        rows = [r for r in read_jsonl(jsonl) if r["step"] <= step]
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def log(row: dict[str, Any]) -> None:
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")

    def validate() -> float | None:
        if not val_sets:
            return None
        model.eval()
        pred = torch_predictor(model, meta, device)
        res = {}
        for name, (ds, d) in val_sets.items():
            m = evaluate_dataset(ds, pred, crop=d.get("crop") or "none", max_depth=d.get("max_depth"),
                                 limit=int(cfg["data"]["val_frames"]), progress=False)
            res[name] = {k: m["metric"][k] for k in ("abs_rel", "rmse", "d1", "silog")}
            res[name]["median_scaled_abs_rel"] = m["median_scaled"]["abs_rel"]
        model.train()
        log({"step": step, "val": res})
        return next(iter(res.values()))["abs_rel"]

    def checkpoint(name: str) -> None:
        save_checkpoint(out_dir / name, model, meta, optimizer=opt.state_dict(),
                        scaler=scaler.state_dict() if use_amp else {}, step=step, epoch=cur_epoch,
                        epoch_pos=cur_pos, best_abs_rel=best, torch_rng=torch.get_rng_state(),
                        config=json.dumps(cfg), stage=stage, elapsed_s=time.time() - t0 + elapsed_before)

    stop_at = min(args.stop_at or total, total)
    budget_s = 60.0 * float(args.time_budget)
    elapsed_before = float(resume_extra.get("elapsed_s", 0.0)) if resume_extra and budget_s else 0.0
    if budget_s:
        for g, mx in zip(opt.param_groups, max_lrs):
            g["lr"] = one_cycle_lr(elapsed_before / budget_s, mx, float(t["pct_start"]))
    t0 = time.time()
    model.train()
    cur_epoch, cur_pos = epoch, pos
    bar = tqdm(total=stop_at, initial=step, desc=f"train {stage}", unit="step", disable=not main)
    loss_acc: dict[str, float] = {}
    n_acc = 0
    it = iter(loader)
    while step < stop_at:
        batch = next(it)
        cur_epoch, cur_pos = key_batches.pending.pop(0)
        img = batch["image"].to(device, non_blocking=True)
        depth = batch["depth"].to(device, non_blocking=True)
        scale = batch["focal_scale"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            out = train_model(img, scale)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        terms = stage_losses(out, depth, scale, meta, stage, cfg["loss"], gen)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step}: { {k: float(v) for k, v in terms.items()} }")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t["grad_clip"]:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], float(t["grad_clip"]))
        scaler.step(opt)
        scaler.update()
        if budget_s:
            frac = (time.time() - t0 + elapsed_before) / budget_s
            for g, mx in zip(opt.param_groups, max_lrs):
                g["lr"] = one_cycle_lr(frac, mx, float(t["pct_start"]))
        else:
            sched.step()
        step += 1
        for k, v in terms.items():
            loss_acc[k] = loss_acc.get(k, 0.0) + float(v.detach())
        loss_acc["loss"] = loss_acc.get("loss", 0.0) + float(loss.detach())
        n_acc += 1
        bar.update(1)
        if main and (step % int(t["log_every"]) == 0 or step == stop_at):
            row = {"step": step, "time_s": round(time.time() - t0 + elapsed_before, 1),
                   "lr": opt.param_groups[-1]["lr"],
                   **{k: v / n_acc for k, v in loss_acc.items()}}
            log(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            loss_acc, n_acc = {}, 0
        timed_out = (bool(args.time_limit) and time.time() - t0 > 60.0 * args.time_limit) or \
            (bool(budget_s) and time.time() - t0 + elapsed_before >= budget_s)
        last = step == stop_at or timed_out
        if main and (step % int(t["eval_every"]) == 0 or last):
            val = validate()
            if val is not None and val < best:
                best = val
                checkpoint("best.pt")
            plot_curves(jsonl, out_dir / "learning_curves.png")
        if main and (step % int(t["ckpt_every"]) == 0 or last):
            checkpoint("latest.pt")
        if timed_out:
            print(f"time limit reached at step {step}", file=sys.stderr)
            break
    bar.close()
    if main:
        if best == math.inf:  # no val set: the last weights are the best we know
            checkpoint("best.pt")
        print(f"done: step {step}, {time.time() - t0:.0f} s, best val AbsRel {best:.4f}, run folder {out_dir}")
    if world > 1:
        dist.destroy_process_group()
    return 0


def _apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Overrides on a resumed config: same syntax as load_config."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(cfg, f)
    try:
        return load_config(f.name, overrides)
    finally:
        os.unlink(f.name)
