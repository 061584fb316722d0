"""The manifest folder format (as ../shared/data/hololens_office): read and write.

Why one format: synthetic frames, converted datasets and the real sequence all load
through the same reader, so training and evaluation never special-case a source.

Layout: ``rgb/NAME.jpg|png``, ``depth/NAME.png`` (uint16, metres = value /
depth_scale, 0 = invalid) and ``manifest.json`` with ``{"name", "frames": [{"rgb",
"depth", "fx", "fy", "cx", "cy", "width", "height", "depth_scale", "max_depth"}]}``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.core.limits import check_size
from reflector_ros.data.sample import Sample

MAX_FRAMES = 10_000_000
MAX_MANIFEST_BYTES = 2 << 30
REQUIRED = ("rgb", "depth", "fx", "fy", "cx", "cy", "width", "height", "depth_scale")
JPEG_QUALITY = 95
DEPTH_SCALE = 1000.0


def frame_range(text: str, n: int) -> range:
    """A frame selection of n frames: '250:373', ':100', '10', '-1', '0:100:5' -> range.

    Python's slice rules, except that an index past the end is an error rather than
    clipped: '370:380' of 373 frames would otherwise quietly give 3 frames instead of 10.
    Raises InputError naming the selection when it is malformed, out of range or empty.
    """
    parts = text.strip().split(":")
    try:
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise InputError(f"frames {text!r}: expected START:STOP[:STEP] or an index, with integers") from None
    if nums == [None]:
        raise InputError(f"frames {text!r}: empty; expected START:STOP[:STEP] or an index")
    if len(nums) == 1:
        if nums[0] is None or not -n <= nums[0] < n:
            raise InputError(f"frames {text!r}: index out of range for {n} frames")
        i = nums[0] % n
        return range(i, i + 1)
    if len(nums) > 3 or (len(nums) == 3 and nums[2] == 0):
        raise InputError(f"frames {text!r}: expected START:STOP[:STEP] with a non-zero step")
    past = [v for v in nums[:2] if v is not None and not -n <= v <= n]
    if len(nums) == 3 and nums[2] is not None and nums[2] < 0 and nums[0] is not None and nums[0] >= n:
        past.insert(0, nums[0])          # counting down, START is a frame: n itself is past the end
    if past:
        raise InputError(f"frames {text!r}: {past[0]} is out of range for {n} frames (frames are 0 to {n - 1}, "
                         f"or -{n} to -1 from the end; STOP may be {n}; an empty START or STOP means the end)")
    r = range(n)[slice(*nums)]
    if len(r) == 0:
        raise InputError(f"frames {text!r} selects no frame of {n}")
    return r


def parse_indices(spec: str | Sequence[int] | None, n: int) -> list[int]:
    """Frame selection of n frames: None (all), a ``frame_range`` string, or a list of ints."""
    if spec is None:
        return list(range(n))
    if isinstance(spec, str):
        return list(frame_range(spec, n))
    out = [int(i) for i in spec]
    bad = [i for i in out if not -n <= i < n]
    if bad:
        raise InputError(f"frame indices {bad[:5]} out of range for {n} frames")
    return [i % n for i in out]


def _check_frame(fr: object, i: int, where: Path) -> dict:
    if not isinstance(fr, dict):
        raise InputError(f"{where}: frame {i} is not an object")
    missing = [k for k in REQUIRED if k not in fr]
    if missing:
        raise InputError(f"{where}: frame {i} lacks {', '.join(missing)}")
    try:
        w, h = int(fr["width"]), int(fr["height"])
        vals = [float(fr[k]) for k in ("fx", "fy", "cx", "cy", "depth_scale")]
        max_depth = float(fr.get("max_depth", math.inf))
    except (TypeError, ValueError):
        raise InputError(f"{where}: frame {i} has a non-numeric size, intrinsic or depth_scale") from None
    check_size(w, h, f"{where}: frame {i}")
    if not all(math.isfinite(v) for v in vals) or vals[0] <= 0 or vals[1] <= 0 or vals[4] <= 0:
        raise InputError(f"{where}: frame {i} needs finite fx, fy, depth_scale > 0, got {vals}")
    if not isinstance(fr["rgb"], str) or not isinstance(fr["depth"], str):
        raise InputError(f"{where}: frame {i} rgb/depth must be relative paths")
    if not max_depth > 0:
        raise InputError(f"{where}: frame {i} max_depth must be > 0")
    return fr


def read_manifest(root: str | Path) -> dict:
    """Parsed and validated manifest.json of a folder."""
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise InputError(f"{root}: no manifest.json (expected the manifest folder format: rgb/, depth/, manifest.json)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes is too large for a manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise InputError(f"{path}: needs an object with a 'frames' list")
    if not data["frames"]:
        raise InputError(f"{path}: 'frames' is empty")
    if len(data["frames"]) > MAX_FRAMES:
        raise InputError(f"{path}: {len(data['frames'])} frames is more than {MAX_FRAMES}")
    for i, fr in enumerate(data["frames"]):
        _check_frame(fr, i, path)
    return data


class ManifestDataset(Sequence):
    """A manifest folder as a sequence of Sample; files are read lazily per item."""

    def __init__(self, root: str | Path, indices: str | Sequence[int] | None = None) -> None:
        self.root = Path(root)
        data = read_manifest(self.root)
        self.name = str(data.get("name", self.root.name))
        frames = data["frames"]
        self.frames = [frames[i] for i in parse_indices(indices, len(frames))]
        if not self.frames:
            raise InputError(f"{self.root}: frame selection {indices!r} is empty")   # an empty list

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("slice a ManifestDataset with indices=..., not [a:b]")
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return load_frame(self.root, self.frames[i])


def _resolve(root: Path, rel: str) -> Path:
    p = (root / rel)
    if not p.is_file():
        raise InputError(f"{root}: missing file {rel}")
    return p


def load_frame(root: Path, fr: dict) -> Sample:
    """One frame as a Sample, with size, dtype and range checks."""
    w, h = int(fr["width"]), int(fr["height"])
    rgb_path, depth_path = _resolve(root, fr["rgb"]), _resolve(root, fr["depth"])
    bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{rgb_path}: unreadable or corrupt image")
    dep = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if dep is None:
        raise InputError(f"{depth_path}: unreadable or corrupt depth PNG")
    if dep.dtype != np.uint16 or dep.ndim != 2:
        raise InputError(f"{depth_path}: depth must be single-channel uint16, got {dep.dtype} shape {dep.shape}")
    if bgr.shape[:2] != (h, w) or dep.shape != (h, w):
        raise InputError(f"{root}: frame {fr['rgb']} is {bgr.shape[1]}x{bgr.shape[0]}, depth "
                         f"{dep.shape[1]}x{dep.shape[0]}, manifest says {w}x{h}")
    depth = dep.astype(np.float32) / np.float32(fr["depth_scale"])
    max_depth = float(fr.get("max_depth", math.inf))
    depth[depth > max_depth] = 0.0
    camera = Intrinsics(float(fr["fx"]), float(fr["fy"]), float(fr["cx"]), float(fr["cy"]), w, h)
    return Sample(np.ascontiguousarray(bgr[..., ::-1]), depth, camera, name=str(Path(fr["rgb"]).stem),
                  group=str(fr.get("group", "")))


def frame_paths(root: Path, stem: str, abs_: bool = False) -> tuple:
    """Relative (or absolute) rgb and depth paths of frame ``stem``."""
    rel = (f"rgb/{stem}.jpg", f"depth/{stem}.png")
    return tuple(root / r for r in rel) if abs_ else rel


def encode_depth(depth: np.ndarray, depth_scale: float = DEPTH_SCALE) -> np.ndarray:
    """Metres -> uint16 (value = round(m * scale)); invalid, negative or too far -> 0."""
    d = np.asarray(depth, np.float64) * depth_scale
    ok = np.isfinite(d) & (d > 0) & (d <= 65535)
    return np.where(ok, np.rint(np.where(ok, d, 0)), 0).astype(np.uint16)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_frame(root: Path, s: Sample, stem: str, existing_ok: bool = False) -> dict:
    """Write one Sample's files; returns its manifest entry. Writes are atomic (resumable runs)."""
    rgb_rel, depth_rel = frame_paths(root, stem)
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    h, w = s.depth.shape
    if not (existing_ok and (root / rgb_rel).exists() and (root / depth_rel).exists()):
        ok1, jpg = cv2.imencode(".jpg", s.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        ok2, png = cv2.imencode(".png", encode_depth(s.depth))
        if not (ok1 and ok2):
            raise InputError(f"could not encode frame {stem}")
        _atomic_write(root / depth_rel, png.tobytes())
        _atomic_write(root / rgb_rel, jpg.tobytes())   # rgb last: its presence marks a complete frame
    return frame_entry(rgb_rel, depth_rel, s.camera)


def frame_entry(rgb_rel: str, depth_rel: str, camera: Intrinsics) -> dict:
    """A frame's manifest entry for files written by save_frame (16-bit PNG depth in
    millimetres, DEPTH_SCALE per metre, 65.535 m at most)."""
    return {"rgb": rgb_rel, "depth": depth_rel, "fx": float(camera.fx), "fy": float(camera.fy),
            "cx": float(camera.cx), "cy": float(camera.cy), "width": int(camera.width), "height": int(camera.height),
            "depth_scale": DEPTH_SCALE, "max_depth": 65.535}


def write_manifest_frames(root: Path, frames: list[dict], name: str, generator: dict | None = None) -> Path:
    """manifest.json from ready frame entries; ``generator``: the settings of the command that
    made the frames (``reflector synth``), kept so a later run can tell its own folder."""
    root = Path(root)
    for i, fr in enumerate(frames):
        _check_frame(fr, i, root)
    path = root / "manifest.json"
    doc: dict = {"name": name, "depth_unit": "depth_png / depth_scale = metres, 0 = invalid"}
    if generator is not None:
        doc["generator"] = generator
    _atomic_write(path, json.dumps({**doc, "frames": frames}, indent=1).encode())
    return path


def write_manifest(root: str | Path, samples: Iterable[Sample], name: str) -> Path:
    """Write Samples as a manifest folder (rgb JPEG q95, depth uint16 mm); frames NNNNNN."""
    from tqdm import tqdm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    frames = [save_frame(root, s, f"{i:06d}") for i, s in enumerate(tqdm(samples, desc="write", unit="frame",
                                                                         leave=False))]
    if not frames:
        raise InputError("write_manifest: no samples")
    return write_manifest_frames(root, frames, name)
