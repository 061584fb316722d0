"""The Reflector network: a relative-depth backbone plus the metric bins head, and its checkpoints.

One code path for every arch (meta.arch): ``small`` (conv) and ``base`` (ViT) backbones
produce rel_depth and feat0..feat3; ``head`` takes the user's own rel_depth and lets a
light encoder stand in for the backbone features.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reflector_ros.core.errors import InputError
from reflector_ros.meta import CONFIDENCE_MODES, INPUT_MODES, ModelMeta
from reflector_ros.model.backbone import BaseBackbone, HeadEncoder, Lite0Backbone, SmallBackbone
from reflector_ros.model.canonical import from_canonical, to_canonical
from reflector_ros.model.layers.attractor import AttractorLayer
from reflector_ros.model.layers.bin_head import BinProbabilityHead, expectation_and_spread, softmax_channels
from reflector_ros.model.layers.error_head import ErrorHead
from reflector_ros.model.layers.fusion import upsample_to
from reflector_ros.model.layers.seed_interval import SeedInterval, unit_to_depth

__all__ = ["ReflectorNet", "build_model", "save_checkpoint", "load_checkpoint",
           "load_pretrained_backbone", "to_canonical", "from_canonical", "ARCHS"]

ARCHS = ("lite0", "small", "base", "head")
N_ATTRACTORS = (16, 8, 4, 1)      # per level, coarse to fine (ZoeDepth)
DILATIONS = (1, 2, 4, 8)          # wider context at each step
MAX_INPUT_SIDE = 4096             # the network's own input side (not an image size limit: core/limits.py)
MAX_BINS = 512


def normalise_rel(rel: Tensor) -> Tensor:
    """Per-image zero mean, unit std: rel depth is only defined up to scale and shift."""
    mu = rel.mean(dim=(1, 2, 3), keepdim=True)
    xc = rel - mu
    std = torch.sqrt((xc * xc).mean(dim=(1, 2, 3), keepdim=True) + 1e-12)
    return xc / (std + 1e-6)


def _resize(x: Tensor, ref: Tensor) -> Tensor:
    return upsample_to(x, ref)


class ReflectorHead(nn.Module):
    """Seed interval on the bottleneck, attractors at 1/32 -> 1/4, bin probabilities at 1/4.

    Full resolution: log depth = upsampled log(sum p_k c_k) + w * (rel_full - upsampled rel),
    w a per-pixel gain predicted at 1/4 (zero at init). Within one image the rel-depth order is
    right, so its fine edges carry over; the result is clipped to [min_depth, max_depth].
    The shipped default (v2.1) has w = 0: the residual peaks between the 1/4-resolution
    samples, and the trained gain turned that into a 4-pixel ripple (docs/model.md).

    Confidence: exp(-sigma / d) of the bin distribution (meta.confidence "spread"), or
    exp(-b) with b the expected |log d - log d*| relative to the frame's average, from the
    error head ("learned"; its log b at 1/4 resolution is returned as ``log_error_scale``
    and is trained against ``canonical_lowres``, upsampled log b gives the confidence).
    """

    def __init__(self, feat_ch: int, meta: ModelMeta, emb: int = 64) -> None:
        super().__init__()
        self.min_depth, self.max_depth = float(meta.min_depth), float(meta.max_depth)
        self.seed = SeedInterval(feat_ch, meta.n_bins, hidden=192)
        self.attractors = nn.ModuleList(AttractorLayer(feat_ch, emb, n, d, dense=i < 3)
                                        for i, (n, d) in enumerate(zip(N_ATTRACTORS, DILATIONS)))
        self.bins = BinProbabilityHead(emb, meta.n_bins, hidden=128)
        self.detail = nn.Conv2d(emb, 1, 1)
        nn.init.zeros_(self.detail.weight)  # starts as plain upsampling of the 1/4 expectation
        nn.init.zeros_(self.detail.bias)  # type: ignore[arg-type]
        self.error = ErrorHead(emb) if meta.confidence == "learned" else None

    def forward(self, image: Tensor, rel_norm: Tensor, feats: list[Tensor], focal_scale: Tensor
                ) -> dict[str, Tensor]:
        rel0 = _resize(rel_norm, feats[0])
        centres, low, high = self.seed(feats[0], rel0)
        emb: Tensor | None = None
        for layer, feat in zip(self.attractors, feats):
            centres, emb = layer(feat, _resize(rel_norm, feat), centres, emb)
        assert emb is not None
        rel_q, image_q = _resize(rel_norm, feats[3]), _resize(image, feats[3])
        probs = softmax_channels(self.bins(emb, centres, rel_q, image_q))
        centres_m = unit_to_depth(centres, self.min_depth, self.max_depth)
        canonical_q, spread = expectation_and_spread(probs, centres_m)
        log_d = _resize(torch.log(canonical_q), rel_norm) + _resize(self.detail(emb), rel_norm) * (
            rel_norm - _resize(rel_q, rel_norm))
        canonical = torch.clamp(torch.exp(log_d), self.min_depth, self.max_depth)
        out = {"canonical": canonical, "canonical_lowres": canonical_q, "centers": centres_m, "probs": probs,
               "interval": unit_to_depth(torch.cat([low, high], dim=1), self.min_depth, self.max_depth)}
        if self.error is not None:
            log_b = self.error(emb, spread, rel_q, image_q)  # 1/4 resolution
            out["log_error_scale"] = log_b
            confidence = torch.exp(torch.exp(_resize(log_b, rel_norm)) * -1.0)  # Mul, not Neg, in ONNX
        else:
            confidence = _resize(torch.exp(spread * -1.0), rel_norm)
        out.update(depth=from_canonical(canonical, focal_scale), confidence=confidence)
        return out


class ReflectorNet(nn.Module):
    """forward(image [B,3,H,W], focal_scale [B], rel_depth=None) -> dict (see docs/ARCHITECTURE.md)."""

    def __init__(self, meta: ModelMeta) -> None:
        super().__init__()
        self.arch = meta.arch
        self.backbone: nn.Module | None = None
        self.encoder: HeadEncoder | None = None
        if meta.arch == "lite0":
            self.backbone = Lite0Backbone()
            ch = Lite0Backbone.out_ch
        elif meta.arch == "small":
            self.backbone = SmallBackbone()
            ch = SmallBackbone.out_ch
        elif meta.arch == "base":
            self.backbone = BaseBackbone((meta.input_height // 16, meta.input_width // 16))
            ch = BaseBackbone.out_ch
        else:
            self.encoder = HeadEncoder()
            ch = HeadEncoder.out_ch
        self.head = ReflectorHead(ch, meta)

    def forward_backbone(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Stage 1 only: (rel_depth, [feat0..feat3]); the `*_backbone.onnx` graph."""
        if self.backbone is None:
            raise ValueError("arch 'head' has no backbone: pass your own rel_depth to forward()")
        return self.backbone(image)

    def forward_head(self, image: Tensor, rel_depth: Tensor, feats: list[Tensor] | None,
                     focal_scale: Tensor) -> dict[str, Tensor]:
        """Stage 2 from given rel depth (and backbone features unless arch is 'head')."""
        rel_norm = normalise_rel(rel_depth)
        if self.encoder is not None:
            feats = self.encoder(image, rel_norm)
        if feats is None:
            raise ValueError("backbone features are required for arch small/base")
        return self.head(image, rel_norm, feats, focal_scale)

    def forward(self, image: Tensor, focal_scale: Tensor, rel_depth: Tensor | None = None) -> dict[str, Tensor]:
        feats: list[Tensor] | None = None
        if self.backbone is not None:
            rel_depth, feats = self.backbone(image)
        elif rel_depth is None:
            raise ValueError("arch 'head' needs rel_depth [B,1,H,W] (your backbone's output at the input size)")
        elif rel_depth.shape[-2:] != image.shape[-2:]:
            rel_depth = upsample_to(rel_depth, image)
        out = self.forward_head(image, rel_depth, feats, focal_scale)
        out["rel_depth"] = rel_depth
        return out


def check_meta(meta: ModelMeta) -> None:
    """Refuse metadata the network cannot be built for, with a message that says why."""
    if meta.arch not in ARCHS:
        raise InputError(f"unknown arch {meta.arch!r}; expected one of {', '.join(ARCHS)}")
    h, w = meta.input_height, meta.input_width
    if not (32 <= h <= MAX_INPUT_SIDE and 32 <= w <= MAX_INPUT_SIDE):
        raise InputError(f"input size {h}x{w} out of range: each side must be in [32, {MAX_INPUT_SIDE}]")
    if meta.arch == "base" and (h % 16 or w % 16):
        raise InputError(f"arch 'base' needs input sides divisible by 16 (patch size), got {h}x{w}")
    if not 2 <= meta.n_bins <= MAX_BINS:
        raise InputError(f"n_bins must be in [2, {MAX_BINS}], got {meta.n_bins}")
    if not 0 < meta.min_depth < meta.max_depth:
        raise InputError(f"need 0 < min_depth < max_depth, got {meta.min_depth}, {meta.max_depth}")
    if meta.focal_canonical <= 0:
        raise InputError(f"focal_canonical must be positive, got {meta.focal_canonical}")
    if meta.confidence not in CONFIDENCE_MODES:
        raise InputError(f"confidence {meta.confidence!r}: expected one of {', '.join(CONFIDENCE_MODES)}")
    if meta.input_mode not in INPUT_MODES:
        raise InputError(f"input_mode {meta.input_mode!r}: expected one of {', '.join(INPUT_MODES)}")
    if meta.input_mode == "canonical" and meta.arch in ("base", "head"):
        raise InputError(f"arch {meta.arch!r} needs a fixed input size: use input_mode 'resize'")
    if not 0 <= meta.max_input_pixels <= MAX_INPUT_SIDE * MAX_INPUT_SIDE:
        raise InputError(f"max_input_pixels must be in [0, {MAX_INPUT_SIDE * MAX_INPUT_SIDE}], got {meta.max_input_pixels}")


def build_model(meta: ModelMeta) -> ReflectorNet:
    """The network for meta.arch, randomly initialised."""
    check_meta(meta)
    return ReflectorNet(meta)


def save_checkpoint(path: str | Path, model: nn.Module, meta: ModelMeta, **extra: Any) -> Path:
    """{"model": state_dict, "meta": meta.to_dict(), **extra}; extra must be plain data
    (numbers, strings, lists, dicts, tensors) so that weights_only loading accepts it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": state, "meta": meta.to_dict(), **extra}, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a half checkpoint under the real name
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[ReflectorNet, ModelMeta, dict[str, Any]]:
    """(model in eval mode, meta, extra). Refuses unreadable or foreign files with InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint is a folder, not a file: {path}" if path.is_dir() else f"checkpoint not found: {path}")
    if path.suffix.lower() == ".onnx":
        raise InputError(f"{path} is an ONNX graph (for inference); this needs the torch checkpoint, "
                         f"{path.with_suffix('.pt').name} beside it")
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if head[:2] != b"PK" and head[:1] != b"\x80":    # torch.save's zip archive, or the legacy pickle
        raise InputError(f"{path}: not a torch checkpoint (torch.save writes a zip archive; this file starts "
                         f"with {head!r})")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated, or a pickle with objects beyond tensors and plain values
        text = str(exc)
        if "Unsupported global" in text:    # torch names the class it refused to unpickle
            raise InputError(f"{path}: holds Python objects other than tensors and plain values, which are "
                             "not loaded (unpickling them could run code): not a Reflector checkpoint") from None
        if "Weights only load failed" in text:
            raise InputError(f"{path}: not a readable Reflector checkpoint (a pickle that torch.save did not "
                             "write, or a damaged one)") from None
        raise InputError(f"{path}: not a readable Reflector checkpoint ({type(exc).__name__}: "
                         f"{text.splitlines()[0] if text else ''})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "meta" not in ckpt:
        raise InputError(f"{path}: not a Reflector checkpoint (expected a dict with 'model' and 'meta')")
    try:
        meta = ModelMeta.from_dict(ckpt["meta"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: bad model metadata ({exc})") from None
    model = build_model(meta)
    _load_state(model, ckpt["model"], str(path))
    model.to(map_location).eval()
    extra = {k: v for k, v in ckpt.items() if k not in ("model", "meta")}
    return model, meta, extra


def _load_state(module: nn.Module, state: Any, source: str) -> None:
    """Strict load with a readable list of what did not match."""
    if not isinstance(state, dict):
        raise InputError(f"{source}: weights are not a state dict")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state)
                   if not isinstance(state[k], Tensor) or state[k].shape != own[k].shape)
    if missing or unexpected or shape:
        def few(names: list[str]) -> str:
            return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        parts = [f"{len(missing)} missing: {few(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {few(unexpected)}" if unexpected else "",
                 f"{len(shape)} with another shape: {few(shape)}" if shape else ""]
        raise InputError(f"{source}: weights do not match this model ({'; '.join(p for p in parts if p)})")
    module.load_state_dict(state, strict=True)


def load_pretrained_backbone(model: ReflectorNet, path: str | Path) -> None:
    """Initialise stage 1 from a file: a Reflector checkpoint (its backbone.* part) or a bare
    backbone state dict. Names must match exactly."""
    if model.backbone is None:
        raise InputError("arch 'head' has no backbone to initialise")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"backbone checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    if isinstance(state, dict) and any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    _load_state(model.backbone, state, str(path))
