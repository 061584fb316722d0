"""Export a Reflector checkpoint to ONNX (opset 17, static batch 1): fused graph and the pair.

`reflector export --checkpoint X.pt --output DIR [--stem S]` writes
``S.onnx`` (image, focal_scale -> depth, confidence, rel_depth),
``S_backbone.onnx`` (image -> rel_depth, feat0..feat3) and
``S_reflector.onnx`` (image, rel_depth, feat0..feat3, focal_scale -> depth, confidence)
and ``S.pt``, the weights alone (for the torch backends), unless that is the checkpoint itself.
For arch ``head`` only ``S_reflector.onnx`` exists (image, rel_depth, focal_scale -> depth,
confidence): the user brings the backbone. Every graph carries ``meta.to_props()``.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from reflector_ros.core.errors import InputError
from reflector_ros.meta import ModelMeta
from reflector_ros.model.reflector import ReflectorNet, load_checkpoint, save_checkpoint

OPSET = 17
FEATS = ("feat0", "feat1", "feat2", "feat3")


class _Fused(nn.Module):
    def __init__(self, net: ReflectorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, focal_scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.net(image, focal_scale)
        return out["depth"], out["confidence"], out["rel_depth"]


class _Backbone(nn.Module):
    def __init__(self, net: ReflectorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        rel, feats = self.net.forward_backbone(image)
        return (rel, *feats)


class _Reflector(nn.Module):
    def __init__(self, net: ReflectorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, rel_depth: Tensor, feat0: Tensor, feat1: Tensor, feat2: Tensor,
                feat3: Tensor, focal_scale: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net.forward_head(image, rel_depth, [feat0, feat1, feat2, feat3], focal_scale)
        return out["depth"], out["confidence"]


class _HeadOnly(nn.Module):
    def __init__(self, net: ReflectorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, rel_depth: Tensor, focal_scale: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net.forward_head(image, rel_depth, None, focal_scale)
        return out["depth"], out["confidence"]


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str],
            outputs: list[str], meta: ModelMeta) -> Path:
    """TorchScript-based exporter, then metadata, checker, atomic rename.

    Static shapes for fixed-size models; a canonical-camera model's image-sized tensors
    (and the features that follow them) get dynamic height and width axes, because its
    input size follows the camera.
    """
    import onnx

    dynamic: dict[str, dict[int, str]] | None = None
    if meta.input_mode == "canonical":
        dynamic = {n: {2: f"{n}_h", 3: f"{n}_w"} for n in (*inputs, *outputs) if n != "focal_scale"}
        for n in ("image", "rel_depth", "depth", "confidence"):
            if n in dynamic:
                dynamic[n] = {2: "height", 3: "width"}
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-to-int conversions are expected
        torch.onnx.export(module, args, str(tmp), opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamo=False, do_constant_folding=True,
                          dynamic_axes=dynamic)
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"Reflector {meta.arch}, {meta.input_description}, {meta.n_bins} bins"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return path


def export_onnx(model: ReflectorNet, meta: ModelMeta, out_dir: str | Path, stem: str,
                progress: bool = False) -> dict[str, Path]:
    """Write the fused graph and the backbone/reflector pair; returns their paths by role.

    progress: show a tqdm bar over the graphs (each takes seconds on a CPU).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            image = torch.randn(1, 3, meta.input_height, meta.input_width)
            scale = torch.ones(1)
            jobs: list[tuple[str, nn.Module, tuple[Tensor, ...], str, list[str], list[str]]]
            if meta.arch == "head":
                rel = torch.rand(1, 1, meta.input_height, meta.input_width)
                jobs = [("reflector", _HeadOnly(model), (image, rel, scale), f"{stem}_reflector.onnx",
                         ["image", "rel_depth", "focal_scale"], ["depth", "confidence"])]
            else:
                rel, feats = model.forward_backbone(image)
                jobs = [
                    ("fused", _Fused(model), (image, scale), f"{stem}.onnx",
                     ["image", "focal_scale"], ["depth", "confidence", "rel_depth"]),
                    ("backbone", _Backbone(model), (image,), f"{stem}_backbone.onnx",
                     ["image"], ["rel_depth", *FEATS]),
                    ("reflector", _Reflector(model), (image, rel, *feats, scale), f"{stem}_reflector.onnx",
                     ["image", "rel_depth", *FEATS, "focal_scale"], ["depth", "confidence"]),
                ]
            paths: dict[str, Path] = {}
            for role, module, args, name, inputs, outputs in tqdm(jobs, desc="export", unit="graph",
                                                                  disable=not progress):
                paths[role] = _export(module, args, out / name, inputs, outputs, meta)
            return paths
    finally:
        model.train(was_training)


def _weights_only(path: Path) -> bool:
    """Whether ``path`` is a checkpoint holding only weights and metadata (what export writes),
    which a new export may replace; a training checkpoint (optimiser, step) is kept."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (not a checkpoint at all: not ours to replace)
        return False
    return isinstance(ckpt, dict) and set(ckpt) == {"model", "meta"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="Reflector checkpoint (.pt)")
    parser.add_argument("--output", required=True, type=Path, help="directory for the ONNX files")
    parser.add_argument("--stem", default=None, help="file name stem (default: the checkpoint's)")


def run(args: argparse.Namespace) -> int:
    try:
        model, meta, _ = load_checkpoint(args.checkpoint)
    except InputError as exc:
        print(f"reflector export: {exc}", file=sys.stderr)
        return 2
    stem = args.stem or args.checkpoint.stem
    if not stem or "/" in stem or stem.startswith("."):
        print(f"reflector export: bad --stem {stem!r}", file=sys.stderr)
        return 2
    # the weights alone go beside the graphs (a training checkpoint also holds the optimiser):
    # the torch backends, CUDA ones included, find them next to the .onnx as they do for the
    # default model. Another checkpoint already under that name would pair the new graphs
    # with other weights, so it is refused before anything is written.
    pt = Path(args.output) / f"{stem}.pt"
    itself = pt.exists() and pt.resolve() == Path(args.checkpoint).resolve()
    if pt.exists() and not itself and not _weights_only(pt):
        print(f"reflector export: {pt} exists and is not an earlier export's weights file (a training "
              f"checkpoint?); {stem}.onnx beside it would run other weights than it. Use another --stem or "
              "--output", file=sys.stderr)
        return 2
    try:
        paths = export_onnx(model, meta, args.output, stem, progress=True)
        if not itself:
            paths["weights"] = save_checkpoint(pt, model, meta)
    except OSError as exc:
        print(f"reflector export: cannot write to {args.output}: {exc}", file=sys.stderr)
        return 2
    for role, path in paths.items():
        print(f"{role:9s} {path}")
    return 0
