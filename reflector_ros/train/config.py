"""The training configuration as typed dataclasses, built and validated once.

Layers, last wins: the defaults below <- a YAML file (or the config a checkpoint stored)
<- ``section.key=value`` overrides, whose values are parsed as YAML. The merged mapping
is converted to :class:`TrainingConfig` in one place (:func:`build`), which refuses
unknown sections and keys and values of the wrong type, then :func:`validate` checks the
ranges and the cross-field rules. Code after that reads typed attributes; no casts.

Checkpoints store ``json.dumps(cfg.to_dict())``; the layout of ``to_dict()`` is the plain
dict earlier versions stored, so their checkpoints resume (:func:`from_checkpoint`).
"""
from __future__ import annotations

import copy
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from reflector_ros.core.errors import InputError
from reflector_ros.core.yamlfile import read_mapping

STAGES = ("relative", "metric", "end2end", "selfsup", "confidence", "context")
AMP_DTYPES = ("float16", "bfloat16")
# defaults that changed: a stored config without the key ran with these values
RESUME_DEFAULTS = {"train": {"freeze_detail": False}}      # on by default since 2026-12-01 (v2.1)
MAX_CROP_SIDE = 4096
MIN_CROP_SIDE = 16


@dataclass
class ModelConfig:
    """The network and its metadata (reflector_ros.meta.ModelMeta fields)."""

    arch: str = "small"
    input_height: int = 256
    input_width: int = 320
    focal_canonical: float = 300.0   # f_c, pixels at the network input
    min_depth: float = 0.1           # canonical metres (bin range)
    max_depth: float = 20.0
    n_bins: int = 64
    input_mode: str = "resize"       # resize | canonical (see ModelMeta)
    max_input_pixels: int = 0
    confidence: str = "spread"       # spread | learned (see ModelMeta)

    def meta(self) -> Any:
        """The ModelMeta these settings describe."""
        from reflector_ros.meta import ModelMeta

        return ModelMeta(**asdict(self))


@dataclass
class DataItem:
    """One training set: a dataset spec (reflector_ros.data.registry) and its share."""

    spec: Union[str, dict[str, Any]]
    weight: float = 1.0


@dataclass
class DataConfig:
    train: list[DataItem] = field(default_factory=list)
    epoch_length: int = 0            # samples per mixed pass; 0 = sum of the set lengths
    workers: int = 2                 # DataLoader processes
    val: dict[str, Union[str, dict[str, Any]]] = field(default_factory=dict)   # {name: spec}
    val_frames: int = 100            # frames per val set, spread evenly (0 = all)
    val_focal_frames: int = 0        # also the 2x-zoom ratio (evaluate.focal_consistency) on this many


@dataclass
class AugmentConfig:
    crop_hw: tuple[int, int] = (128, 160)          # crop of the network-scale frame, pixels
    # each crop's sides x a factor drawn in this range, then a batch is cut to its smallest
    # crop: the network sees more or less context around the same pixels, as a camera's
    # field of view does (narrow lenses give small canonical-scale inputs)
    crop_scale_range: tuple[float, float] = (1.0, 1.0)
    scale_range: tuple[float, float] = (1.0, 1.0)  # random zoom, log-uniform; fx, fy follow
    flip: bool = True
    color: bool = True
    # whole frames at network scale instead of crops (crop_hw and crop_scale_range unused),
    # as the network sees them at run time; frames differ in size, so train.batch_size 1.
    # Stage confidence uses it: where in the frame a pixel lies is one of the error head's cues.
    whole_frames: bool = False


@dataclass
class TrainConfig:
    stage: str = "end2end"           # one of STAGES
    steps: int = 1000                # schedule length
    batch_size: int = 8
    lr: float = 1e-3                 # peak one-cycle learning rate of the head
    weight_decay: float = 0.01
    backbone_lr_mult: float = 0.1
    freeze_backbone: bool = False
    freeze_detail: bool = True       # keep the head's full-resolution detail gain as it starts (docs/model.md, v2.1)
    pct_start: float = 0.1
    grad_clip: float = 1.0           # 0: off
    imagenet_init: bool = False
    encoder_lr_mult: float = 0.1     # pretrained encoder rate, times the backbone's
    freeze_encoder_bn: bool = False
    amp: bool = True                 # GPU only
    amp_dtype: str = "float16"       # float16 (with loss scaling) or bfloat16 (Ampere and later; fp32's range, no scaling)
    seed: int = 0
    threads: int = 0                 # CPU threads; 0: min(4, cores / ranks)
    log_every: int = 10
    eval_every: int = 250
    ckpt_every: int = 250
    keep_snapshots: bool = False     # also step_NNNNNN.pt at every evaluation (tools/average_checkpoints.py)


@dataclass
class LossConfig:
    """Weights of the supervised loss terms (0 = off) and SILog's lambda."""

    ssi: float = 1.0
    grad: float = 0.5
    silog: float = 1.0
    silog_lambda: float = 0.85
    chamfer: float = 0.0
    rpnl: float = 0.0
    bin_nll: float = 0.0
    confidence: float = 1.0          # the error head's Laplace NLL (stage confidence only)
    # stage context (train/context.py): the backbone's features and relative depth held to the
    # --init model's own on the full crop (context_full), and, for a window of the crop run
    # alone (context_window_range of each side, whole 32-pixel blocks), to that model's
    # full-view features over the window (context_window); context_rel weighs the relative
    # depth among them
    context_full: float = 1.0
    context_window: float = 1.0
    context_rel: float = 1.0
    context_window_range: tuple[float, float] = (0.33, 0.75)


@dataclass
class SequenceItem:
    """A video with camera poses for the ``selfsup`` stage.

    ``spec`` is a manifest folder with a ``poses.txt`` (camera-to-world, optical frame) or a
    bag (``bag:PATH?image=TOPIC&info=TOPIC``) with nav_msgs/Odometry on ``odom_topic``. A
    bag's camera extrinsic comes from ``/tf_static`` (``base_frame`` -> ``camera_frame``;
    empty names: the odometry's child_frame_id and the image's header frame_id) unless
    ``extrinsic`` gives it: [x, y, z, qx, qy, qz, qw], the camera *optical* frame's pose in
    the base frame (metres, unit quaternion), for bags recorded without /tf_static.
    """

    spec: Union[str, dict[str, Any]]
    weight: float = 1.0
    odom_topic: str = "/odom"
    base_frame: str = ""
    camera_frame: str = ""
    extrinsic: Union[tuple[float, ...], None] = None
    max_pose_gap: float = 0.25       # seconds between odometry messages around a frame


@dataclass
class SelfsupConfig:
    """The self-supervised stage (docs/selfsup.md): photometric reconstruction from video."""

    sequences: list[SequenceItem] = field(default_factory=list)
    source_offsets: tuple[int, ...] = (-1, 1)   # sources t+o of target t, in frames
    min_translation: float = 0.03    # metres target<->source; less: skipped (standing still)
    max_translation: float = 0.6     # metres; more: skipped (too little overlap, a jump)
    max_rotation: float = 25.0       # degrees; more: skipped
    photometric_alpha: float = 0.85  # alpha (1 - SSIM) / 2 + (1 - alpha) L1 (Monodepth2)
    smoothness: float = 1e-3         # edge-aware smoothness weight (Monodepth2)
    automask: bool = True            # drop pixels the unwarped source explains better
    source_margin: int = 32          # pixels of each source kept around the target crop
    supervised_weight: float = 0.0   # > 0: each step adds a data.train batch (with depth)
    refine_poses: bool = False       # per-pair pose corrections, odometry as prior
    refine_prior: float = 10.0       # weight of the corrections' squared size
    refine_lr: float = 1e-3


@dataclass
class TrainingConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    selfsup: SelfsupConfig = field(default_factory=SelfsupConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, no tuples): JSON for checkpoints, YAML for config.yaml."""
        return _plain(asdict(self))


SECTIONS: dict[str, Any] = typing.get_type_hints(TrainingConfig)   # {section: its dataclass}


def defaults() -> dict[str, Any]:
    """The default configuration as a plain dict."""
    return TrainingConfig().to_dict()


# ----------------------------------------------------------------------------- building

def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive update of plain dicts; ``val`` and lists are replaced, not merged."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k != "val":
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _known(section: str) -> list[str]:
    return [f.name for f in fields(SECTIONS[section])]


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``section.key=value`` items applied to a plain config dict, in memory; values are YAML.

    ``data.val.NAME=SPEC`` adds or replaces one validation set. Unknown sections and keys
    raise InputError naming the known ones.
    """
    out = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise InputError(f"override {item!r}: expected section.key=value, e.g. train.lr=3e-4")
        if parts[0] not in SECTIONS:
            raise InputError(f"override {item!r}: no section {parts[0]!r}; known: {sorted(SECTIONS)}")
        if parts[1] not in _known(parts[0]):
            raise InputError(f"override {item!r}: unknown key {parts[1]!r}; known: {_known(parts[0])}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise InputError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        node = out.setdefault(parts[0], {})
        for p in parts[1:-1]:
            if not isinstance(node.get(p), dict):
                raise InputError(f"override {item!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return out


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (the dataclass annotations), or InputError naming ``where``."""
    if tp is Any:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of the allowed forms")
    if is_dataclass(tp):
        if isinstance(value, str) and "spec" in {f.name for f in fields(tp)}:
            value = {"spec": value}          # a bare spec string is {spec: ..., weight: 1}
        return _build(tp, value, where)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple):
        if value is None and origin is list:
            return []
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis) and len(value) != len(args):
            raise InputError(f"{where}: expected {len(args)} values, got {value!r}")
        item_types = [args[0]] * len(value) if origin is list or args[-1] is Ellipsis else list(args)
        items = [_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, item_types))]
        return items if origin is list else tuple(items)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):   # YAML reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise InputError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise InputError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: no conversion for {tp!r}")   # a programming error, not bad input


def _build(cls: Any, data: Any, where: str, strict: bool = True) -> Any:
    """A dataclass from a mapping: unknown keys refused (or dropped with a note when not
    ``strict``), missing keys take the defaults, each value converted to its field's type."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a mapping, got {data!r}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown and strict:
        raise InputError(f"{where}: unknown keys {unknown}; known: {names}")
    if unknown:
        print(f"note: {where}: ignoring keys this version does not know: {unknown}", file=sys.stderr)
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise InputError(f"{where}: missing {missing}")
    hints = typing.get_type_hints(cls)
    kw = {}
    for name in names:
        if name in data:
            tp = hints[name]
            sub = f"{where}.{name}" if where else name
            kw[name] = _build(tp, data[name], sub, strict) if is_dataclass(tp) else _coerce(data[name], tp, sub)
    return cls(**kw)


def build(raw: Mapping[str, Any], where: str = "config", strict: bool = True) -> TrainingConfig:
    """Defaults <- ``raw`` (a plain nested dict), converted and validated."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: expected a mapping with sections {sorted(SECTIONS)}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown and strict:
        raise InputError(f"{where}: unknown sections {unknown}; known: {sorted(SECTIONS)}")
    merged = merge(defaults(), {k: v for k, v in raw.items() if k in SECTIONS})
    for name, section in merged.items():
        if section is None:
            merged[name] = {}
    try:
        cfg = _build(TrainingConfig, merged, "", strict)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    validate(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a plain dict (InputError when unreadable or not a mapping)."""
    doc = read_mapping(path, "config", f"a mapping with sections {sorted(SECTIONS)}")
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise InputError(f"{path}: unknown sections {unknown}; known: {sorted(SECTIONS)}")
    return doc


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainingConfig:
    """Defaults <- YAML file <- ``section.key=value`` overrides, validated."""
    raw = merge(defaults(), read_yaml(path)) if path else defaults()
    return build(apply_overrides(raw, overrides), str(path) if path else "config")


def from_checkpoint(stored: str | Mapping[str, Any], overrides: Sequence[str] = (),
                    where: str = "checkpoint") -> TrainingConfig:
    """The config a training checkpoint stored (JSON text or a dict), with overrides.

    Keys this version does not know are dropped with a note rather than refused, so a
    run started by an older version resumes; keys it lacks take today's defaults, except
    where a default changed: those take the value the older version ran with
    (``RESUME_DEFAULTS``), so its optimiser state still fits.
    """
    import json

    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: stored config is not JSON ({exc})") from None
    if not isinstance(stored, Mapping):
        raise InputError(f"{where}: stored config is not a mapping")
    raw = merge(defaults(), RESUME_DEFAULTS)
    raw = merge(raw, {k: v for k, v in stored.items() if k in SECTIONS})
    return build(apply_overrides(raw, overrides), where, strict=False)


# ----------------------------------------------------------------------------- validation

def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def validate(cfg: TrainingConfig) -> None:
    """Every range and cross-field rule of a config, in one place (InputError on the first)."""
    from reflector_ros.data.registry import parse_spec
    from reflector_ros.model.reflector import check_meta

    check_meta(cfg.model.meta())
    t, d, a, s = cfg.train, cfg.data, cfg.augment, cfg.selfsup
    _check(t.stage in STAGES, f"train.stage {t.stage!r}: expected one of {STAGES}")
    _check(t.amp_dtype in AMP_DTYPES, f"train.amp_dtype {t.amp_dtype!r}: expected one of {AMP_DTYPES}")
    for key in ("steps", "batch_size", "log_every", "eval_every", "ckpt_every"):
        _check(getattr(t, key) >= 1, f"train.{key} must be a positive integer, got {getattr(t, key)!r}")
    _check(t.lr > 0 and math.isfinite(t.lr), f"train.lr must be > 0, got {t.lr}")
    for key in ("weight_decay", "backbone_lr_mult", "encoder_lr_mult", "grad_clip"):
        _check(0 <= getattr(t, key) < math.inf, f"train.{key} must be >= 0, got {getattr(t, key)}")
    _check(0 < t.pct_start < 1, f"train.pct_start must be in (0, 1), got {t.pct_start}")
    _check(t.threads >= 0 and t.seed >= 0, "train.threads and train.seed must be >= 0")
    _check(d.workers >= 0 and d.epoch_length >= 0 and d.val_frames >= 0 and d.val_focal_frames >= 0,
           "data.workers, data.epoch_length, data.val_frames and data.val_focal_frames must be >= 0")
    if t.stage == "selfsup":
        _check(bool(s.sequences), "stage selfsup names no video (selfsup.sequences: [{spec: ..., weight: ...}])")
        _check(s.supervised_weight == 0 or bool(d.train),
               "selfsup.supervised_weight > 0 needs data.train (sets with depth)")
    else:
        _check(bool(d.train), "config names no training data (data.train: [{spec: ..., weight: ...}])")
    for where, items in (("data.train", d.train), ("selfsup.sequences", s.sequences)):
        weights = [item.weight for item in items]
        _check(all(0 <= w < math.inf for w in weights) and (not weights or sum(weights) > 0),
               f"{where} weights must be >= 0 with a positive sum, got {weights}")
        for item in items:
            parse_spec(item.spec)
    for spec in d.val.values():
        parse_spec(spec)
    _check(t.stage != "confidence" or a.whole_frames,
           "stage confidence needs augment.whole_frames: true (the error head's cues include the pixel's "
           "place in the frame; see config/train_confidence.yaml)")
    _check(t.stage != "confidence" or cfg.loss.confidence > 0, "stage confidence needs loss.confidence > 0")
    _check(not a.whole_frames or t.batch_size == 1,
           f"augment.whole_frames: frames differ in size, so train.batch_size must be 1, got {t.batch_size}")
    ch, cw = a.crop_hw
    _check(MIN_CROP_SIDE <= ch <= MAX_CROP_SIDE and MIN_CROP_SIDE <= cw <= MAX_CROP_SIDE,
           f"augment.crop_hw {ch}x{cw} out of range")
    lo, hi = a.scale_range
    _check(0.1 <= lo <= hi <= 4.0, f"augment.scale_range {a.scale_range}: expected 0.1 <= lo <= hi <= 4")
    lo, hi = a.crop_scale_range
    _check(0.25 <= lo <= hi <= 1.0 and MIN_CROP_SIDE <= lo * min(a.crop_hw),
           f"augment.crop_scale_range {a.crop_scale_range}: expected 0.25 <= lo <= hi <= 1 "
           f"and crops of at least {MIN_CROP_SIDE} pixels")
    for key, value in asdict(cfg.loss).items():
        if key != "context_window_range":
            _check(0 <= value < math.inf, f"loss.{key} must be >= 0, got {value}")
    lo, hi = cfg.loss.context_window_range
    _check(0.1 <= lo <= hi < 1.0, f"loss.context_window_range {cfg.loss.context_window_range}: expected 0.1 <= lo <= hi < 1")
    if t.stage == "context":
        _check(a.whole_frames or min(a.crop_hw) >= 96,
               f"stage context: augment.crop_hw {a.crop_hw} must be at least 96 pixels a side "
               "(windows of whole 32-pixel blocks inside it)")
        _check(cfg.loss.context_full + cfg.loss.context_window > 0,
               "stage context needs loss.context_full or loss.context_window > 0")
    _check(cfg.loss.silog_lambda <= 1, f"loss.silog_lambda must be in [0, 1], got {cfg.loss.silog_lambda}")
    _check(bool(s.source_offsets) and 0 not in s.source_offsets and len(set(s.source_offsets)) == len(s.source_offsets),
           f"selfsup.source_offsets {list(s.source_offsets)}: distinct non-zero frame offsets, e.g. [-1, 1]")
    _check(0 <= s.min_translation < s.max_translation < math.inf,
           f"selfsup: need 0 <= min_translation < max_translation, got {s.min_translation}, {s.max_translation}")
    _check(0 < s.max_rotation <= 180, f"selfsup.max_rotation must be in (0, 180] degrees, got {s.max_rotation}")
    _check(0 <= s.photometric_alpha <= 1, f"selfsup.photometric_alpha must be in [0, 1], got {s.photometric_alpha}")
    for key in ("smoothness", "supervised_weight", "refine_prior"):
        _check(0 <= getattr(s, key) < math.inf, f"selfsup.{key} must be >= 0, got {getattr(s, key)}")
    _check(s.refine_lr > 0, f"selfsup.refine_lr must be > 0, got {s.refine_lr}")
    _check(0 <= s.source_margin <= MAX_CROP_SIDE, f"selfsup.source_margin must be in [0, {MAX_CROP_SIDE}]")
    for i, item in enumerate(s.sequences):
        if item.extrinsic is not None:
            q = item.extrinsic[3:]
            _check(len(item.extrinsic) == 7 and all(math.isfinite(v) for v in item.extrinsic)
                   and sum(v * v for v in q) > 1e-12,
                   f"selfsup.sequences[{i}].extrinsic: expected [x, y, z, qx, qy, qz, qw] with a non-zero quaternion")
        _check(item.max_pose_gap > 0, f"selfsup.sequences[{i}].max_pose_gap must be > 0 seconds")
