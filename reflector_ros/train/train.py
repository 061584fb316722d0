"""`reflector train`: train or fine-tune a Reflector model from a YAML config.

Stages (MODEL_NOTES): ``relative`` trains the backbone with the MiDaS losses on
inverse depth; ``metric`` trains the head with SILog on canonical depth; ``end2end``
sums both; ``selfsup`` learns metric depth from video and camera poses alone
(photometric reconstruction, reflector_ros/train/selfsup.py, docs/selfsup.md), mixed
with supervised batches where a set with depth is given; ``confidence`` trains only the
error head of an existing model (model/layers/error_head.py), best on scenes that model
never trained on, so that it learns the errors the network makes on new scenes; ``context``
distils the backbone of an existing model so that its features do not depend on how much of
the scene it sees (reflector_ros/train/context.py). Training crops keep the focal
length in pixels of the network-resolution frame, so a 256x320 model learns on 128x160
crops and runs on whole frames (reflector_ros/train/augment.py). The configuration is
typed and validated once (reflector_ros/train/config.py).
Runs resume exactly (model, optimiser, schedule, AMP scaler, sample order and
augmentation seeds), use AMP on GPU, and DDP under torchrun.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from reflector_ros.core.errors import InputError
from reflector_ros.train.curves import plot_curves, read_jsonl
from reflector_ros.train.streams import Stream
from reflector_ros.train.config import (
    STAGES, DataItem, LossConfig, ModelConfig, TrainConfig, TrainingConfig, from_checkpoint, load_config, read_yaml,
    validate,
)

__all__ = ["add_arguments", "run", "train", "load_config", "one_cycle_lr", "stage_losses", "param_groups"]


def named(key: str, fn: Any, *args: Any) -> Any:
    """fn(*args), with an InputError's message prefixed by the config key it came from."""
    try:
        return fn(*args)
    except InputError as err:
        raise InputError(f"{key}: {err}") from None


def open_checked(key: str, spec: Any, say: bool = True) -> Any:
    """One dataset of the config, opened and its first frame read now, in this process: a
    set that cannot be used (an empty selection, no depth, depth not registered to the colour
    image) fails here with the config key in the message, not later inside a DataLoader worker.
    Prints the set's size, and for bags how many colour frames had no depth near them."""
    from reflector_ros.data.registry import open_dataset

    ds = named(key, open_dataset, spec)
    if len(ds) == 0:
        raise InputError(f"{key}: {spec} holds no frames")
    first = named(key, ds.__getitem__, 0)
    if not (np.asarray(first.depth) > 0).any():
        raise InputError(f"{key}: the first frame of {spec} has no valid depth to train or validate against "
                         f"(a bag spec needs depth=TOPIC)")
    if say:
        dropped = getattr(ds, "unmatched", 0)
        extra = (f"; {dropped} colour frame(s) had no depth within max_dt and are left out "
                 f"(&max_dt=SECONDS in the spec widens the window)") if dropped else ""
        print(f"{key}: {len(ds)} frames{extra}", file=sys.stderr)
    return ds


def open_val_sets(val: dict[str, Any], say: bool = True) -> dict[str, tuple[Any, dict[str, Any]]]:
    """data.val's sets by name: (dataset, its protocol defaults such as crop and max_depth)."""
    from reflector_ros.data.registry import dataset_defaults

    return {name: (open_checked(f"data.val.{name}", spec, say), dataset_defaults(spec)) for name, spec in val.items()}


def open_train_data(items: Sequence[DataItem], epoch_length: int, seed: int, say: bool = True) -> Sequence[Any]:
    """The training sets mixed by weight (BalancedMix), or the one set as it is."""
    from reflector_ros.data.mixing import BalancedMix

    sets = [open_checked(f"data.train[{i}]", item.spec, say) for i, item in enumerate(items)]
    length = epoch_length or sum(len(s) for s in sets)
    if len(sets) == 1 and length == len(sets[0]):
        return sets[0]
    return BalancedMix(sets, [item.weight for item in items], length, seed)


# ----------------------------------------------------------------------------- losses

def stage_losses(out: dict[str, Any], depth: Any, scale: Any, meta: Any, stage: str,
                 w: LossConfig, generator: Any = None) -> dict[str, Any]:
    """Supervised loss terms (fp32) for a batch; targets: inverse depth (relative),
    depth / focal_scale (metric). ``end2end`` (and ``selfsup``'s supervised batches) sum both.

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
    if stage in ("relative", "end2end", "selfsup"):
        inv = torch.where(mask, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
        rel = out["rel_depth"].float()
        terms["ssi"] = w.ssi * L.ssi_loss(rel, inv, mask)
        if w.grad:
            terms["grad"] = w.grad * L.gradient_matching_loss(rel, inv, mask)
    if stage in ("metric", "end2end", "selfsup"):
        pred = out["canonical"].float()
        terms["silog"] = w.silog * L.silog_loss(pred, canon, mask, lam=w.silog_lambda)
        if w.chamfer:
            terms["chamfer"] = w.chamfer * L.chamfer_bins_loss(out["centers"].float(), canon, mask, generator=generator)
        if w.rpnl:
            terms["rpnl"] = w.rpnl * L.rpnl_loss(pred, canon, mask, generator=generator)
        if w.bin_nll:
            terms["bin_nll"] = w.bin_nll * L.bin_nll_loss(out["centers"], out["probs"], canon, mask)
    if stage == "confidence" and w.confidence:
        # only here: the head learns from whole frames (position is one of its cues); crops in
        # the other stages would teach it positions within the crop, so they leave it as it is
        from reflector_ros.model.layers.error_head import laplace_nll, relative_residual

        # at the head's own 1/4 resolution, against the 1/4-resolution expectation: a full-
        # resolution target adds edge errors the head cannot place, and it then ranked worse
        # (HoloLens 250-372: 17 % instead of 24 %)
        low = out["canonical_lowres"].float()
        canon_q = torch.nn.functional.interpolate(canon, size=low.shape[-2:], mode="nearest")
        mask_q = torch.nn.functional.interpolate(mask.float(), size=low.shape[-2:], mode="nearest") > 0.5
        residual = relative_residual(low, canon_q, mask_q)
        terms["confidence"] = w.confidence * laplace_nll(out["log_error_scale"].float(), residual, mask_q)
    return terms


# ----------------------------------------------------------------------------- optimisation

def one_cycle_lr(frac: float, max_lr: float, pct: float, div: float = 25.0, final_div: float = 100.0) -> float:
    """The OneCycle cosine shape at progress frac in [0, 1] (time-budget mode)."""
    frac = min(max(frac, 0.0), 1.0)
    lo, end = max_lr / div, max_lr / div / final_div
    if frac < pct:
        return lo + (max_lr - lo) * 0.5 * (1 - math.cos(math.pi * frac / pct))
    return end + (max_lr - end) * 0.5 * (1 + math.cos(math.pi * (frac - pct) / max(1 - pct, 1e-9)))


def _make_scheduler(opt: Any, max_lrs: list[float], total: int, pct: float, done: int) -> Any:
    """OneCycle over `total` steps, fast-forwarded to `done` (lets --steps change on resume)."""
    import warnings

    import torch

    if abs(pct * max(total, 2) - 1.0) < 1e-9:  # OneCycleLR divides by pct * total - 1 (e.g. 10 steps at 0.1)
        pct = 0.5 / max(total, 2)
    for g, lr in zip(opt.param_groups, max_lrs):
        g["lr"] = lr
        g.pop("initial_lr", None)
        g.pop("max_lr", None)
        g.pop("min_lr", None)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, total_steps=max(total, 2),
                                                pct_start=pct, anneal_strategy="cos",
                                                div_factor=25.0, final_div_factor=100.0)
    with warnings.catch_warnings():  # fast-forwarding steps the schedule without the optimiser
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(min(done, total - 1)):
            sched.step()
    return sched


def param_groups(model: Any, stage: str, t: TrainConfig) -> tuple[list[dict[str, Any]], list[float]]:
    """Optimiser groups and their peak learning rates; parameters left out are frozen.

    A pretrained encoder (``backbone.encoder.*``, lite0) learns at ``encoder_lr_mult`` x the
    backbone's rate (ZoeDepth: 1/10), the rest of the backbone at ``backbone_lr_mult`` x lr,
    the Reflector head at lr. ``relative`` and ``context`` train the backbone only; ``freeze_backbone``
    trains the head only; ``confidence`` the error head only (``head.error.*``).
    ``freeze_detail`` keeps the head's full-resolution detail gain (``head.detail.*``) as it
    starts (zero from scratch and in the v2.1 default: trained, it drew a 4-pixel ripple).
    """
    if stage == "confidence":
        params = [p for n, p in model.named_parameters() if n.startswith("head.error.")]
        if not params:
            raise InputError("stage confidence: the model has no error head (model.confidence: learned)")
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("head.error."))
        return [{"params": params, "name": "error_head"}], [t.lr]
    backbone_only = stage in ("relative", "context")
    bb_lr = 0.0 if t.freeze_backbone else t.lr * (1.0 if backbone_only else t.backbone_lr_mult)
    enc_lr = bb_lr * t.encoder_lr_mult
    head_lr = 0.0 if backbone_only else t.lr
    named: dict[str, list[Any]] = {"encoder": [], "backbone": [], "head": []}
    for n, p in model.named_parameters():
        if t.freeze_detail and n.startswith("head.detail."):
            p.requires_grad_(False)
            continue
        key = "encoder" if n.startswith("backbone.encoder.") else "backbone" if n.startswith("backbone.") else "head"
        named[key].append(p)
    groups, max_lrs = [], []
    for key, rate in (("encoder", enc_lr), ("backbone", bb_lr), ("head", head_lr)):
        if not named[key]:
            continue
        if rate <= 0.0:
            for p in named[key]:
                p.requires_grad_(False)
            continue
        groups.append({"params": named[key], "name": key})
        max_lrs.append(rate)
    if not groups:
        raise InputError("nothing to train: every parameter group is frozen")
    return groups, max_lrs


def freeze_bn_stats(model: Any) -> None:
    """Put the pretrained encoder's BatchNorm layers in eval mode (running statistics fixed):
    batches of a few small crops give noisy statistics (ZoeDepth freezes MiDaS' BN)."""
    import torch

    enc = getattr(getattr(model, "backbone", None), "encoder", None)
    if enc is None:
        return
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def evaluate_val_sets(model: Any, meta: Any, val_sets: dict[str, tuple[Any, dict[str, Any]]], frames: int,
                      device: Any, confidence: bool = False, focal_frames: int = 0) -> dict[str, dict[str, float]]:
    """The model (put in eval mode) on every validation set: AbsRel, RMSE, δ1, SILog and the
    median-scaled AbsRel, on ``frames`` frames per set spread evenly (0: all); with
    ``focal_frames``, also ``focal_ratio``: the median 2x-zoom ratio
    (train.evaluate.focal_consistency) over that many frames. With
    ``confidence``: instead AbsRel and that of the most confident half of the pixels, per
    frame then averaged (train.metrics.confidence_split), and the gain 1 - half / all."""
    from reflector_ros.train.evaluate import confidence_ranking, evaluate_dataset, focal_ratios, torch_predictor

    model.eval()
    res = {}
    if confidence:
        from reflector_ros.backends.torch_backend import TorchBackend

        backend = TorchBackend.from_model(model, meta, device)
        for name, (ds, _) in val_sets.items():
            every, half = confidence_ranking(backend, ds, frames)
            res[name] = {"abs_rel": every, "confident_half_abs_rel": half, "confidence_gain": 1.0 - half / every}
        return res
    pred = torch_predictor(model, meta, device)
    for name, (ds, d) in val_sets.items():
        m = evaluate_dataset(ds, pred, crop=d.get("crop") or "none", max_depth=d.get("max_depth"),
                             limit=frames, progress=False)
        res[name] = {k: m["metric"][k] for k in ("abs_rel", "rmse", "d1", "silog")}
        res[name]["median_scaled_abs_rel"] = m["median_scaled"]["abs_rel"]
        if focal_frames:
            res[name]["focal_ratio"] = float(np.median(focal_ratios(pred, ds, focal_frames)))
    return res


# ----------------------------------------------------------------------------- the run

@dataclass
class Position:
    """Where a run stands, besides its weights and optimiser: what a checkpoint records.

    ``epoch``/``pos`` are the main stream's (supervised crops, or the selfsup targets);
    ``sup_epoch``/``sup_pos`` the supervised side stream of a selfsup run.
    """

    step: int = 0
    epoch: int = 0
    pos: int = 0
    sup_epoch: int = 0
    sup_pos: int = 0
    best: float = math.inf
    elapsed_before: float = 0.0    # training seconds of the sessions before a --resume


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def resolve_config(args: argparse.Namespace) -> tuple[TrainingConfig, dict[str, Any] | None]:
    """The run's config and, when resuming, the checkpoint's extra state (no weights yet).

    ``--stage`` and ``--steps`` act as the last overrides. ``--init default`` names the
    shipped model. The ``selfsup`` stage adapts the ``--init`` model as it is: its
    metadata (arch, input size and mode, f_c, bins) replaces the config's model section,
    so one config serves whatever model a robot runs.
    """
    from reflector_ros.model.reflector import load_checkpoint

    overrides = list(args.overrides)
    if args.stage:
        overrides.append(f"train.stage={args.stage}")
    if args.steps:
        overrides.append(f"train.steps={int(args.steps)}")
    if args.init == "default":
        from reflector_ros.weights import default_model

        args.init = str(default_model(".pt"))
    if not args.resume:
        cfg = load_config(args.config, overrides)
        stage = cfg.train.stage
        if stage in ("confidence", "context") and not args.init:
            what = "the error head" if stage == "confidence" else "the backbone"
            raise InputError(f"stage {stage} trains {what} of an existing model: give --init")
        if not args.init:
            return cfg, None
        _, init_meta, _ = load_checkpoint(args.init)
        adapts = stage in ("selfsup", "confidence", "context")
        names_model = (bool(args.config) and "model" in read_yaml(args.config)) or \
            any(o.split("=", 1)[0].startswith("model.") for o in overrides)
        if adapts or not names_model:  # a fine-tune config without a model section: --init's model
            model = ModelConfig(**{f.name: getattr(init_meta, f.name) for f in fields(ModelConfig)})
            if stage == "confidence":
                model = replace(model, confidence="learned")
            if model != cfg.model:
                why = f"{stage} adapts the --init model as it is" if adapts else "the config names no model section"
                print(f"note: {why}; model section taken from {args.init}", file=sys.stderr)
                cfg = replace(cfg, model=model)
                validate(cfg)
            if stage == "context" and model.confidence == "learned":
                print(f"note: {args.init} has an error head; stage context changes the depth it was trained "
                      f"on, so retrain it after this run with --config config/train_confidence.yaml", file=sys.stderr)
        if not adapts and init_meta.confidence == "learned":
            print(f"note: {args.init} has an error head; it is kept (model.confidence: learned) and left "
                  f"as it is: retrain it after this run with --config config/train_confidence.yaml "
                  f"(docs/training.md)", file=sys.stderr)
            cfg = replace(cfg, model=replace(cfg.model, confidence="learned"))
        return cfg, None
    if Path(args.resume).is_dir() and (Path(args.resume) / "latest.pt").is_file():
        args.resume = str(Path(args.resume) / "latest.pt")   # a run folder: continue its latest checkpoint
    _, _, extra = load_checkpoint(args.resume)
    if "config" not in extra or "step" not in extra:
        raise InputError(f"{args.resume}: not a training checkpoint (no config/step); use --init to fine-tune from it")
    return from_checkpoint(extra["config"], overrides, where=str(args.resume)), extra


class Trainer:
    """One training run: model, optimiser, data streams, logging and checkpoints.

    ``run()`` steps until the schedule, ``--stop-at`` or a time limit ends it; every
    ``ckpt_every`` steps (and at the end) it writes ``latest.pt``, which ``--resume``
    continues exactly.
    """

    def __init__(self, cfg: TrainingConfig, args: argparse.Namespace, resume: dict[str, Any] | None) -> None:
        import torch
        import torch.distributed as dist

        from reflector_ros.model.reflector import build_model, load_checkpoint

        self.cfg, self.args, self.resume = cfg, args, resume
        t = cfg.train
        self.stage = t.stage
        self.meta = cfg.model.meta()
        self.world, self.rank, local = _dist_env()
        if self.world > 1 and self.stage == "context":
            raise InputError("stage context runs in one process (its teacher and window passes bypass DDP)")
        self.cuda = torch.cuda.is_available()
        if self.world > 1:
            dist.init_process_group("nccl" if self.cuda else "gloo")
        self.device = torch.device(f"cuda:{local}" if self.cuda else "cpu")
        if self.cuda:
            torch.cuda.set_device(self.device)
        else:
            torch.set_num_threads(t.threads or max(1, min(4, (os.cpu_count() or 2) // self.world)))
            if self.rank == 0:
                print(f"CPU training with {torch.get_num_threads()} thread(s) per process (train.threads; fewer "
                      f"when other work shares these cores)", file=sys.stderr)
        self.main = self.rank == 0
        self.out_dir = Path(args.out or (Path(args.resume).parent if args.resume else "runs/train"))
        self.jsonl = self.out_dir / "metrics.jsonl"

        torch.manual_seed(t.seed)
        self.model = build_model(self.meta).to(self.device)
        if t.imagenet_init and not args.init and not resume:
            backbone: Any = self.model.backbone
            if not hasattr(backbone, "load_imagenet"):
                raise InputError(f"train.imagenet_init: arch {self.meta.arch!r} has no ImageNet encoder (use lite0)")
            backbone.load_imagenet()
        if args.init and not resume:
            init_model, init_meta, _ = load_checkpoint(args.init)
            same = {"extra": {}, "confidence": self.meta.confidence}  # an error head is added or kept
            if init_meta.to_dict() | same != self.meta.to_dict() | same:
                print(f"note: --init model meta differs from the config; using the config's ({self.meta})",
                      file=sys.stderr)
            state = init_model.state_dict()
            fresh = [k for k in self.model.state_dict() if k.startswith("head.error.") and k not in state]
            if fresh:  # a model without an error head gets a new one
                print(f"note: {args.init} has no error head; it starts untrained", file=sys.stderr)
                state.update({k: self.model.state_dict()[k] for k in fresh})
            try:
                self.model.load_state_dict(state)
            except RuntimeError:  # a different network: shapes or names do not match
                differ = {k: (v, self.meta.to_dict()[k]) for k, v in init_meta.to_dict().items()
                          if k not in same and self.meta.to_dict().get(k) != v}
                raise InputError(f"--init {args.init} is another network than the config's model section "
                                 f"(--init vs config: {differ}); drop the config's model section (and model.* "
                                 f"overrides) to fine-tune the --init model as it is") from None
        if resume is not None and resume.get("stage", self.stage) != self.stage:
            raise InputError(f"{args.resume} is a stage {resume['stage']} run and cannot continue as stage "
                             f"{self.stage}: start the new stage with --init")
        self.teacher: Any = None
        if self.stage == "context":
            if self.model.backbone is None:
                raise InputError(f"stage context trains the backbone; arch {self.meta.arch!r} has none")
            import copy

            # the model as it starts, frozen: it holds the features to themselves
            self.teacher = copy.deepcopy(self.model).eval()
            if resume is not None:
                if "teacher" not in resume:
                    raise InputError(f"{args.resume}: a stage context checkpoint without its teacher")
                self.teacher.load_state_dict(resume["teacher"])
            for q in self.teacher.parameters():
                q.requires_grad_(False)
        self.groups, self.max_lrs = param_groups(self.model, self.stage, t)
        self.lr_group = len(self.groups) - 1     # the group whose lr the log shows (the head's)
        self.refiner: Any = None
        self.seq_data: Any = None
        if self.stage == "selfsup":
            self._open_sequences()
        self.opt = torch.optim.AdamW(self.groups, lr=t.lr, weight_decay=t.weight_decay)
        self.use_amp = t.amp and self.cuda
        self.amp_dtype = getattr(torch, t.amp_dtype)
        # bfloat16 keeps fp32's exponent range: no loss scaling
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and t.amp_dtype == "float16")
        self.pos = Position()
        if resume is not None:
            self._restore(resume)
        # the data opens before anything is written: a wrong path leaves no half-made run folder
        self.train_data: Sequence[Any] | None = None
        if self.stage != "selfsup" or cfg.selfsup.supervised_weight > 0:
            self.train_data = open_train_data(cfg.data.train, cfg.data.epoch_length, t.seed, say=self.main)
        self.val_sets = open_val_sets(cfg.data.val) if self.main else {}
        if self.main:
            if resume is None and args.init and Path(args.init).resolve().parent == self.out_dir.resolve():
                raise InputError(f"--init {args.init} lies in --out {self.out_dir}, whose earlier run this fresh run "
                                 f"clears: give another --out (or --resume to continue that run)")
            if resume is None and (self.out_dir / "latest.pt").exists():
                print(f"note: {self.out_dir} holds an earlier run; this one replaces its checkpoints and log "
                      f"(--resume {self.out_dir / 'latest.pt'} continues it instead)", file=sys.stderr)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    # -- setup

    def _open_sequences(self) -> None:
        """Self-supervised data, and the pose refiner's optimiser group when asked."""
        from reflector_ros.train.selfsup import PoseRefiner, open_sequences

        ss = self.cfg.selfsup
        self.seq_data = open_sequences(ss, self.cfg.data.epoch_length, self.cfg.train.seed)
        if ss.refine_poses:
            self.refiner = PoseRefiner(self.seq_data.n_pairs).to(self.device)
            self.groups.append({"params": [self.refiner.delta], "name": "pose_refine", "weight_decay": 0.0})
            self.max_lrs.append(ss.refine_lr)

    def _prepare_folder(self) -> None:
        """The run folder holds this run's history and nothing else. A fresh run clears an
        earlier run's log, snapshots and best.pt. A resume keeps what lies up to its step and
        drops the log rows, snapshots and best.pt from past it (a crash after the checkpoint,
        or the history abandoned by resuming from an earlier snapshot); resumed into another
        folder, it brings the source run's log and best.pt up to its step along."""
        import shutil

        import torch

        p, best = self.pos, self.out_dir / "best.pt"
        snapshots = [f for f in self.out_dir.glob("step_*.pt") if f.stem[5:].isdigit()]
        source = Path(self.args.resume).parent if self.resume is not None else self.out_dir
        moved = source.resolve() != self.out_dir.resolve()
        if self.resume is None or moved:   # nothing here belongs to this run's history
            for f in [self.jsonl, best, *snapshots]:
                f.unlink(missing_ok=True)
            if self.resume is None:
                return
        rows = [r for r in read_jsonl(source / "metrics.jsonl") if r["step"] <= p.step]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        src_best = source / "best.pt"
        best_ok = src_best.exists() and int(torch.load(src_best, map_location="cpu", weights_only=True)["step"]) <= p.step
        if not best_ok:
            p.best = math.inf     # the next evaluation writes best.pt again
        if moved:
            if best_ok:
                shutil.copy2(src_best, best)
            return
        dropped = [f for f in snapshots if int(f.stem[5:]) > p.step] + ([best] if best.exists() and not best_ok else [])
        for f in dropped:
            f.unlink()
        if dropped:
            print(f"note: removed {', '.join(f.name for f in dropped)} from {self.out_dir}: past step {p.step}, "
                  f"the history this resume abandons", file=sys.stderr)

    def _restore(self, extra: dict[str, Any]) -> None:
        import torch

        from reflector_ros.model.reflector import load_checkpoint

        ck_model, _, _ = load_checkpoint(self.args.resume)
        self.model.load_state_dict(ck_model.state_dict())
        if self.refiner is not None:
            if "pose_refine" not in extra or extra["pose_refine"].shape != self.refiner.delta.shape:
                raise InputError(f"{self.args.resume}: no pose refinement state matching these sequences "
                                 f"(selfsup.refine_poses or the data changed)")
            with torch.no_grad():
                self.refiner.delta.copy_(extra["pose_refine"])
        self.opt.load_state_dict(extra["optimizer"])  # same stage (checked in __init__): same groups
        if "scaler" in extra and self.scaler.is_enabled():
            self.scaler.load_state_dict(extra["scaler"])
        self.pos = Position(step=int(extra["step"]), epoch=int(extra["epoch"]), pos=int(extra["epoch_pos"]),
                            sup_epoch=int(extra.get("sup_epoch", 0)), sup_pos=int(extra.get("sup_epoch_pos", 0)),
                            best=float(extra.get("best_abs_rel", math.inf)))
        torch.set_rng_state(extra["torch_rng"])

    def _streams(self) -> tuple[Stream, Stream | None]:
        """The main stream (crops, or selfsup targets) and a selfsup run's supervised stream."""
        from reflector_ros.train.augment import CropSet, collate_crops

        cfg, t, p = self.cfg, self.cfg.train, self.pos
        workers = cfg.data.workers
        sup: Stream | None = None
        if self.train_data is not None:
            crops = CropSet(self.train_data, self.meta, cfg.augment)
            epoch, pos = (p.epoch, p.pos) if self.stage != "selfsup" else (p.sup_epoch, p.sup_pos)
            sup = Stream(crops, t.batch_size, t.seed, self.rank, self.world, epoch, pos, workers, self.cuda,
                         collate_fn=collate_crops)
        if self.stage != "selfsup":
            assert sup is not None
            return sup, None
        from reflector_ros.train.selfsup import SequenceCropSet

        seqs = SequenceCropSet(self.seq_data, self.meta, cfg.augment, cfg.selfsup)
        main = Stream(seqs, t.batch_size, t.seed, self.rank, self.world, p.epoch, p.pos, workers, self.cuda)
        return main, sup

    # -- logging, validation, checkpoints

    def log(self, row: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")

    def evaluate(self, val_sets: dict[str, tuple[Any, dict[str, Any]]]) -> float | None:
        """Evaluate, log, and return the first set's AbsRel (None without val sets)."""
        if not val_sets:
            return None
        res = evaluate_val_sets(self.model, self.meta, val_sets, self.cfg.data.val_frames, self.device,
                                confidence=self.stage == "confidence", focal_frames=self.cfg.data.val_focal_frames)
        self.train_mode()
        self.log({"step": self.pos.step, "val": res})
        first = next(iter(res.values()))
        return first["confident_half_abs_rel"] if self.stage == "confidence" else first["abs_rel"]

    def train_mode(self) -> None:
        """Training mode, except what stays frozen: a pretrained encoder's BatchNorm statistics
        (train.freeze_encoder_bn), the whole network but the error head in stage confidence,
        and every BatchNorm in stage context."""
        if self.stage == "confidence":
            self.model.eval()
            self.model.head.error.train()
            return
        if self.stage == "context":  # BatchNorm statistics stay the teacher's
            self.model.eval()
            return
        self.model.train()
        if self.cfg.train.freeze_encoder_bn:
            freeze_bn_stats(self.model)

    def checkpoint(self, name: str, elapsed_s: float) -> None:
        import torch

        from reflector_ros.model.reflector import save_checkpoint

        p = self.pos
        extra: dict[str, Any] = {}
        if self.stage == "selfsup":
            extra.update(sup_epoch=p.sup_epoch, sup_epoch_pos=p.sup_pos)
        if self.refiner is not None:
            extra["pose_refine"] = self.refiner.delta.detach().cpu()
        if self.teacher is not None:
            extra["teacher"] = self.teacher.state_dict()
        save_checkpoint(self.out_dir / name, self.model, self.meta, optimizer=self.opt.state_dict(),
                        scaler=self.scaler.state_dict() if self.scaler.is_enabled() else {}, step=p.step, epoch=p.epoch,
                        epoch_pos=p.pos, best_abs_rel=p.best, torch_rng=torch.get_rng_state(),
                        config=json.dumps(self.cfg.to_dict()), stage=self.stage, elapsed_s=elapsed_s, **extra)

    # -- one step

    def step_terms(self, main: Stream, sup: Stream | None, gen: Any) -> tuple[dict[str, Any], dict[str, float]]:
        """Draw the step's batch(es) and return its loss terms and diagnostics."""
        import torch

        batch, (self.pos.epoch, self.pos.pos) = main.next()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.stage == "context":
            from reflector_ros.train.context import context_terms

            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                return context_terms(self.model, self.teacher, batch["image"], self.cfg.loss, gen), {}
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            out = self.train_model(batch["image"], batch["focal_scale"])
        stats: dict[str, float] = {}
        if self.stage == "selfsup":
            from reflector_ros.train.selfsup import selfsup_terms

            terms, stats = selfsup_terms(out, batch, self.cfg.selfsup, self.refiner)
        else:
            terms = stage_losses(out, batch["depth"], batch["focal_scale"], self.meta, self.stage, self.cfg.loss, gen)
        if sup is not None and self.stage == "selfsup":
            sb, (self.pos.sup_epoch, self.pos.sup_pos) = sup.next()
            sb = {k: v.to(self.device, non_blocking=True) for k, v in sb.items()}
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                sout = self.train_model(sb["image"], sb["focal_scale"])
            w = self.cfg.selfsup.supervised_weight
            for k, v in stage_losses(sout, sb["depth"], sb["focal_scale"], self.meta, "selfsup", self.cfg.loss,
                                     gen).items():
                terms["sup_" + k] = w * v
        return terms, stats

    def optimise(self, loss: Any) -> None:
        import torch
        import torch.distributed as dist

        t = self.cfg.train
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.refiner is not None and self.world > 1 and self.refiner.delta.grad is not None:
            dist.all_reduce(self.refiner.delta.grad)     # DDP does not own the refiner
            self.refiner.delta.grad /= self.world
        if t.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_([p for g in self.groups for p in g["params"]], t.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()

    # -- the loop

    def run(self) -> int:
        import torch
        import torch.distributed as dist
        from tqdm import tqdm

        args, t, p = self.args, self.cfg.train, self.pos
        total = t.steps
        if p.step >= total:
            print(f"checkpoint is at step {p.step}, schedule has {total} steps: nothing to do (raise --steps)")
            return 0
        sched = _make_scheduler(self.opt, self.max_lrs, total, t.pct_start, p.step)
        self.train_model: Any = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.train_model = DDP(self.model, device_ids=[self.device.index] if self.cuda else None,
                                   find_unused_parameters=self.stage != "end2end")
        main, sup = self._streams()
        val_sets = self.val_sets
        if self.main:
            self._prepare_folder()
            if self.seq_data is not None:
                self.log({"step": p.step, "selfsup_frames": self.seq_data.counts})

        if self.main and self.resume is None and args.init and val_sets:
            # the model the run starts from, on the same frames: the first point of the
            # learning curves, and best.pt until a trained state beats it
            val = self.evaluate(val_sets)
            if val is not None:
                p.best = val
                self.checkpoint("best.pt", 0.0)
                what = "AbsRel of the most confident half" if self.stage == "confidence" else "AbsRel"
                print(f"step 0 (the --init model): val {what} {val:.4f}", file=sys.stderr)
        stop_at = min(args.stop_at or total, total)
        budget_s = 60.0 * args.time_budget
        if self.resume is not None:  # time_s in the log, and a time budget, count every session
            p.elapsed_before = float(self.resume.get("elapsed_s", 0.0))
        if budget_s:
            for g, mx in zip(self.opt.param_groups, self.max_lrs):
                g["lr"] = one_cycle_lr(p.elapsed_before / budget_s, mx, t.pct_start)
        main.start()
        if sup is not None and self.stage == "selfsup":
            sup.start()
        t0 = time.time()
        self.train_mode()
        bar = tqdm(total=stop_at, initial=p.step, desc=f"train {self.stage}", unit="step", disable=not self.main)
        acc: dict[str, float] = {}
        n_acc = 0
        while p.step < stop_at:
            gen = torch.Generator().manual_seed(t.seed * 1_000_003 + p.step)
            terms, stats = self.step_terms(main, sup, gen)
            if not terms:
                raise InputError(f"stage {self.stage}: every loss term is weighted 0, nothing to train")
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {p.step}: { {k: float(v) for k, v in terms.items()} }")
            step_lr = self.opt.param_groups[self.lr_group]["lr"]  # the rate this step used
            self.optimise(loss)
            if budget_s:
                frac = (time.time() - t0 + p.elapsed_before) / budget_s
                for g, mx in zip(self.opt.param_groups, self.max_lrs):
                    g["lr"] = one_cycle_lr(frac, mx, t.pct_start)
            else:
                sched.step()
            p.step += 1
            for k, v in terms.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach())
            for k, x in stats.items():
                acc[k] = acc.get(k, 0.0) + x
            acc["loss"] = acc.get("loss", 0.0) + float(loss.detach())
            n_acc += 1
            bar.update(1)
            if self.main and (p.step % t.log_every == 0 or p.step == stop_at):
                row = {"step": p.step, "time_s": round(time.time() - t0 + p.elapsed_before, 1),
                       "lr": step_lr, **{k: v / n_acc for k, v in acc.items()}}
                self.log(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}")
                acc, n_acc = {}, 0
            timed_out = (bool(args.time_limit) and time.time() - t0 > 60.0 * args.time_limit) or \
                (bool(budget_s) and time.time() - t0 + p.elapsed_before >= budget_s)
            last = p.step == stop_at or timed_out
            if self.main and (p.step % t.eval_every == 0 or last):
                val = self.evaluate(val_sets)
                if val is not None and val < p.best:
                    p.best = val
                    self.checkpoint("best.pt", time.time() - t0 + p.elapsed_before)
                plot_curves(self.jsonl, self.out_dir / "learning_curves.png")
                if t.keep_snapshots:  # every evaluated state, for choosing or averaging later
                    self.checkpoint(f"step_{p.step:06d}.pt", time.time() - t0 + p.elapsed_before)
            if self.main and (p.step % t.ckpt_every == 0 or last):
                self.checkpoint("latest.pt", time.time() - t0 + p.elapsed_before)
            if timed_out:
                print(f"time limit reached at step {p.step}", file=sys.stderr)
                break
        bar.close()
        if self.main:
            if p.best == math.inf:  # no val set: the last weights are the best we know
                self.checkpoint("best.pt", time.time() - t0 + p.elapsed_before)
            what = "AbsRel of the most confident half" if self.stage == "confidence" else "AbsRel"
            best = f"best val {what} {p.best:.4f}" if p.best < math.inf else "no val set (best.pt = the last step)"
            print(f"done: step {p.step}, {time.time() - t0:.0f} s, {best}, run folder {self.out_dir}")
            if self.stage == "context":
                print("stage context: its result is latest.pt (the last step); best.pt is chosen by AbsRel alone")
        if self.world > 1:
            dist.destroy_process_group()
        return 0


def train(args: argparse.Namespace) -> int:
    cfg, resume = resolve_config(args)
    return Trainer(cfg, args, resume).run()


# ----------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="training YAML (see config/train_*.yaml)")
    p.add_argument("--out", default=None,
                   help="run folder: checkpoints, metrics.jsonl, learning_curves.png (default: the --resume "
                        "checkpoint's folder, else runs/train)")
    p.add_argument("--resume", help="checkpoint to continue exactly (optimiser, schedule, data order), or a run "
                                    "folder to continue its latest.pt")
    p.add_argument("--init", help="checkpoint whose weights start this run (fine-tuning); 'default': the shipped model")
    p.add_argument("--stage", choices=STAGES, help="override train.stage")
    p.add_argument("--steps", type=int, help="override train.steps (total schedule length)")
    p.add_argument("--stop-at", type=int, default=0, help="stop at this step (checkpoint written); resume later")
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after this many minutes (checkpoint written)")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="run the one-cycle LR schedule over this many wall-clock minutes instead of over "
                        "train.steps (which becomes a cap): uses a shared or slow machine fully; "
                        "a resumed run is then not bit-identical")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. train.lr=3e-4")


def run(args: argparse.Namespace) -> int:
    try:
        return train(args)
    except InputError as exc:
        # raised in a DataLoader worker, torch re-raises it with that worker's traceback in
        # the message: the user needs its last line, which is the InputError's own
        msg = str(exc)
        if "Original Traceback" in msg:
            msg = msg.strip().splitlines()[-1].removeprefix(f"{InputError.__module__}.InputError: ")
        print(f"reflector train: error: {msg}", file=sys.stderr)
        return 2
