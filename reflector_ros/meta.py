"""Model metadata: what a backend must know to feed the network and undo its scaling.

It travels with every model (ONNX ``metadata_props`` and the torch checkpoint), so
an engine, an ONNX file or a checkpoint is self-describing and the node never
guesses the input size or the canonical focal length.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

META_VERSION = "1"


@dataclass(frozen=True)
class ModelMeta:
    arch: str = "small"                 # small | base | head (external relative depth)
    input_height: int = 256
    input_width: int = 320
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)   # RGB, on [0, 1] pixels
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    focal_canonical: float = 300.0      # f_c in pixels at the network input
    min_depth: float = 0.1              # canonical metres (bin range)
    max_depth: float = 20.0
    n_bins: int = 64
    version: str = META_VERSION
    extra: dict[str, str] = field(default_factory=dict)

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


def network_focal(fx: float, fy: float, width: int, height: int, meta: ModelMeta) -> float:
    """Focal length in pixels after the plain resize to the network input (no crop)."""
    return 0.5 * (fx * meta.input_width / width + fy * meta.input_height / height)


def focal_scale(fx: float, fy: float, width: int, height: int, meta: ModelMeta) -> float:
    """f_net / f_c: multiply canonical depth by this to get metres (Metric3D)."""
    return network_focal(fx, fy, width, height, meta) / meta.focal_canonical
