"""One string (or dict) names a dataset in training and evaluation configs.

Specs look like ``TYPE:PATH?key=value&key=value``:

- ``synthetic:DIR`` / ``manifest:DIR?frames=0:250`` (manifest folder format)
- ``nyu_mat:FILE[?split=FILE]`` (official labelled .mat, optional test indices)
- ``nyu_sync:ROOT?split=FILE`` (BTS/AdaBins "sync" layout + Eigen split file)
- ``kitti:DATA_ROOT?gt=GT_ROOT&split=FILE[&skip_missing=1]``
- ``bag:PATH?image=TOPIC[&depth=TOPIC][&info=TOPIC][&max_dt=0.02][&intrinsics=fx,fy,cx,cy][&rectify=auto|true|false]``

Every type also takes ``frames=START:STOP[:STEP]`` (Python slice semantics) so a
config can hold out frames. The dict form is ``{"type": ..., "path": ..., key: value}``.
Loaders are imported lazily so a config that only names manifests never imports h5py.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from reflector_ros.core.errors import InputError
from reflector_ros.data.manifest import frame_range
from reflector_ros.data.sample import Sample

# Evaluation protocol per type: crop name (None = whole image) and depth cap in metres
# (None = no cap). NYU: Eigen crop, 10 m; KITTI: Garg crop, 80 m (MODEL_NOTES).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic": {"crop": None, "max_depth": 10.0},
    "manifest": {"crop": None, "max_depth": 10.0},
    "nyu_mat": {"crop": "eigen", "max_depth": 10.0},
    "nyu_sync": {"crop": "eigen", "max_depth": 10.0},
    "kitti": {"crop": "garg", "max_depth": 80.0},
    "bag": {"crop": None, "max_depth": None},
}

# Option keys each type accepts besides "path" and "frames"; a typo is an error, not a silent default.
_OPTIONS: dict[str, frozenset[str]] = {
    "synthetic": frozenset(),
    "manifest": frozenset(),
    "nyu_mat": frozenset({"split"}),
    "nyu_sync": frozenset({"split"}),
    "kitti": frozenset({"gt", "split", "skip_missing"}),
    "bag": frozenset({"image", "depth", "info", "max_dt", "intrinsics", "rectify"}),
}


def parse_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a string or dict spec to {"type", "path", options...}; validates the keys."""
    if isinstance(spec, Mapping):
        cfg = {str(k): v for k, v in spec.items()}
    elif isinstance(spec, str):
        kind, sep, rest = spec.partition(":")
        if not sep:
            raise InputError(f"dataset spec {spec!r} has no type; expected TYPE:PATH, TYPE one of {sorted(DATASET_DEFAULTS)}")
        path, _, query = rest.partition("?")
        cfg = {"type": kind.strip(), "path": path}
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            if key in cfg:
                raise InputError(f"dataset spec {spec!r}: option {key!r} given twice")
            cfg[key] = value
    else:
        raise InputError(f"dataset spec must be a string or a mapping, got {type(spec).__name__}")
    if cfg.get("type") not in _OPTIONS:
        raise InputError(f"unknown dataset type {cfg.get('type')!r}; known types: {', '.join(sorted(_OPTIONS))}")
    if not cfg.get("path"):
        raise InputError(f"dataset spec {spec!r} has no path")
    kind = str(cfg["type"])
    unknown = set(cfg) - {"type", "path", "frames"} - _OPTIONS[kind]
    if unknown:
        allowed = sorted(_OPTIONS[kind] | {"frames"})
        raise InputError(f"dataset type {kind!r} does not take {sorted(unknown)}; it takes {allowed}")
    return cfg


def dataset_defaults(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Evaluation crop and depth cap for a spec (a copy, safe to modify)."""
    return dict(DATASET_DEFAULTS[parse_spec(spec)["type"]])


def open_dataset(spec: str | Mapping[str, Any]) -> Sequence[Sample]:
    """Open the dataset a config names; files are read lazily per item."""
    cfg = parse_spec(spec)
    kind, path = cfg["type"], Path(str(cfg["path"])).expanduser()
    ds: Sequence[Sample]
    if kind in ("synthetic", "manifest"):
        from reflector_ros.data.manifest import ManifestDataset

        frames = cfg.pop("frames", None)
        ds = ManifestDataset(path, indices=str(frames) if frames not in (None, "") else None)
    elif kind == "nyu_mat":
        from reflector_ros.data.nyu import NYUMatDataset

        ds = NYUMatDataset(path, split=_opt_path(cfg, "split"))
    elif kind == "nyu_sync":
        from reflector_ros.data.nyu import NYUSyncDataset

        ds = NYUSyncDataset(path, _required_path(cfg, "split"))
    elif kind == "kitti":
        from reflector_ros.data.kitti import KittiDataset

        ds = KittiDataset(path, _required_path(cfg, "gt"), _required_path(cfg, "split"),
                          skip_missing=_bool(cfg.get("skip_missing", True), "skip_missing"))
    else:  # bag
        from reflector_ros.data.rosbag import BagDataset

        if not path.exists():
            raise InputError(f"bag dataset {path}: not found")
        if not cfg.get("image"):
            raise InputError(f"bag dataset {path} needs image=TOPIC")
        if not cfg.get("info") and not cfg.get("intrinsics"):
            raise InputError(f"bag dataset {path} needs info=CAMERA_INFO_TOPIC or intrinsics=fx,fy,cx,cy")
        ds = BagDataset(path, str(cfg["image"]), depth_topic=cfg.get("depth") or None,
                        camera_info_topic=cfg.get("info") or None,
                        max_dt=_float(cfg.get("max_dt", 0.02), "max_dt"),
                        intrinsics=_intrinsics(cfg.get("intrinsics")),
                        rectify=str(cfg.get("rectify", "auto")))
    if cfg.get("frames") not in (None, ""):
        ds = Subset(ds, frame_range(str(cfg["frames"]), len(ds)))
    return ds


class Subset(Sequence[Sample]):
    """A selection of another dataset's frames (a range, or any list of indices), still lazy."""

    def __init__(self, base: Sequence[Sample], indices: Sequence[int]) -> None:
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        return self.base[self.indices[i]]


def _opt_path(cfg: dict[str, Any], key: str) -> Path | None:
    value = cfg.get(key)
    return Path(str(value)).expanduser() if value not in (None, "") else None


def _required_path(cfg: dict[str, Any], key: str) -> Path:
    path = _opt_path(cfg, key)
    if path is None:
        raise InputError(f"dataset type {cfg['type']!r} needs {key}=... (spec path {cfg['path']})")
    return path


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InputError(f"{key}={value!r}: expected true/false")


def _float(value: Any, key: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{key}={value!r}: expected a number") from None
    if not out >= 0 or out == float("inf"):
        raise InputError(f"{key}={value!r}: expected a finite number >= 0")
    return out


def _intrinsics(value: Any) -> tuple[float, float, float, float] | None:
    if value in (None, ""):
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        nums = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise InputError(f"intrinsics={value!r}: expected fx,fy,cx,cy numbers") from None
    if len(nums) != 4:
        raise InputError(f"intrinsics={value!r}: expected 4 numbers fx,fy,cx,cy")
    return nums[0], nums[1], nums[2], nums[3]
