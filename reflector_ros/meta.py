"""Model metadata: what a backend must know to feed the network and undo its scaling.

It travels with every model (ONNX ``metadata_props`` and the torch checkpoint), so
an engine, an ONNX file or a checkpoint is self-describing and the node never
guesses the input size or the canonical focal length.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

META_VERSION = "1"


@dataclass(frozen=True)
class ModelMeta:
    arch: str = "small"                 # small | base | head (external relative depth)
    input_height: int = 256
    input_width: int = 320
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)   # RGB, on [0, 1] pixels
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    focal_canonical: float = 300.0      # f_c in pixels at the network input
    # "resize": the whole frame is resized to input_height x input_width whatever the camera,
    #   and depth scales with f_net / f_c (Metric3D's label transform; the network must read
    #   the magnification from the image).
    # "canonical": the frame is resized by f_c / f, so the network always sees the canonical
    #   focal length (Metric3D's image transform); the input size follows the camera, and
    #   input_height x input_width is only the nominal size (warm-up, engine profiles).
    input_mode: str = "resize"
    max_input_pixels: int = 0           # canonical mode: above this the frame is shrunk further
    min_depth: float = 0.1              # canonical metres (bin range)
    max_depth: float = 20.0
    n_bins: int = 64
    # "spread": confidence from the spread of the bin distribution; "learned": a head
    # trained to predict where a frame's log-depth error is larger (model/layers/error_head.py)
    confidence: str = "spread"
    version: str = META_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def input_description(self) -> str:
        """The network input size in words, for logs and the ONNX doc string."""
        if self.input_mode == "canonical":
            return f"input size follows the camera (canonical focal f_c {self.focal_canonical:g} px)"
        return f"input {self.input_height}x{self.input_width} (height x width)"

    def to_props(self) -> dict[str, str]:
        """Flat string map for ONNX metadata_props."""
        return {f"reflector.{k}": json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelMeta":
        known = {f.name for f in fields(cls)}
        kw = {}
        for key, raw in props.items():
            if not key.startswith("reflector."):
                continue
            name = key[len("reflector."):]
            if name in known:
                val = json.loads(raw)
                kw[name] = tuple(val) if isinstance(val, list) else val
        if not kw:
            raise ValueError("model has no reflector.* metadata; was it exported by `reflector export`?")
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


INPUT_MODES = ("resize", "canonical")
CONFIDENCE_MODES = ("spread", "learned")
MIN_INPUT_SIDE = 32     # the encoder's stride: anything smaller has no 1/32 map


def input_size(fx: float, fy: float, width: int, height: int, meta: ModelMeta) -> tuple[int, int]:
    """(h, w) the whole (width x height) frame is resized to before the network; no crop.

    ``resize`` mode: the meta's fixed size. ``canonical`` mode (Metric3D's image transform):
    the frame is scaled by f_c / f with f = (fx + fy) / 2, so the network's focal length is
    f_c whatever the camera; above ``max_input_pixels`` it is scaled down further and the
    rest of the magnification goes through focal_scale (the label transform), and no side
    goes below MIN_INPUT_SIDE. Sizes are rounded to whole pixels (error < 0.5 px per side).
    """
    if meta.input_mode != "canonical":
        return meta.input_height, meta.input_width
    s = meta.focal_canonical / (0.5 * (fx + fy))
    h, w = height * s, width * s
    if meta.max_input_pixels and h * w > meta.max_input_pixels:
        r = math.sqrt(meta.max_input_pixels / (h * w))
        h, w = h * r, w * r
    if min(h, w) < MIN_INPUT_SIDE:
        r = MIN_INPUT_SIDE / min(h, w)
        h, w = h * r, w * r
    return max(MIN_INPUT_SIDE, round(h)), max(MIN_INPUT_SIDE, round(w))


@dataclass(frozen=True)
class NetInput:
    """What one frame's network input is: the size the whole frame is resized to, and
    f_net / f_c, the factor from the network's canonical depth to metres."""
    height: int
    width: int
    focal_scale: float


def network_input(camera: Any, meta: ModelMeta) -> NetInput:
    """The network input for frames of ``camera`` (a core.camera.Intrinsics of the frame
    as it reaches the network, i.e. after rectification): ``input_size`` and ``focal_scale``."""
    h, w = input_size(camera.fx, camera.fy, camera.width, camera.height, meta)
    return NetInput(h, w, focal_scale(camera.fx, camera.fy, camera.width, camera.height, meta))


def network_focal(fx: float, fy: float, width: int, height: int, meta: ModelMeta) -> float:
    """Focal length in pixels after the resize to the network input (``input_size``)."""
    h, w = input_size(fx, fy, width, height, meta)
    return 0.5 * (fx * w / width + fy * h / height)


def focal_scale(fx: float, fy: float, width: int, height: int, meta: ModelMeta) -> float:
    """f_net / f_c: multiply canonical depth by this to get metres (Metric3D).

    In ``canonical`` mode this is 1 up to pixel rounding, unless the frame hit the
    pixel cap or the minimum side.
    """
    return network_focal(fx, fy, width, height, meta) / meta.focal_canonical
