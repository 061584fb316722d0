"""TensorRT engine cache: one engine per (ONNX bytes, TensorRT, GPU, precision, shape).

An engine is only valid for the exact TensorRT version and GPU it was built on, so
we key it on all of them and never trust an engine whose sidecar disagrees. Pure
Python (no TensorRT import) so it is tested on machines without a GPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TypeVar

LOG = logging.getLogger(__name__)
ENV_DIR = "REFLECTOR_ENGINE_DIR"
KEY_VERSION = 1
T = TypeVar("T")


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str      # "8.7"
    precision: str               # fp16 | fp32 | int8
    input_shape: tuple[int, ...]  # (1, 3, H, W)
    key_version: int = KEY_VERSION

    def digest(self) -> str:
        """Stable hex digest of every field; the file name carries its first 16 chars."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "EngineKey":
        return cls(**{**d, "input_shape": tuple(int(x) for x in d["input_shape"])})


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hash the ONNX bytes, so a retrained model with the same name is never stale-served."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def make_key(onnx_path: str | os.PathLike[str], trt_version: str, gpu_name: str,
             compute_capability: str | tuple[int, int], precision: str,
             input_shape: tuple[int, ...]) -> EngineKey:
    if precision not in ("fp16", "fp32", "int8"):
        raise ValueError(f"precision must be fp16, fp32 or int8, got {precision!r}")
    cc = compute_capability if isinstance(compute_capability, str) else "%d.%d" % tuple(compute_capability)
    return EngineKey(file_sha256(onnx_path), str(trt_version), str(gpu_name), cc, precision,
                     tuple(int(x) for x in input_shape))


def default_cache_dir(engine_dir: str | os.PathLike[str] | None = None) -> Path:
    """engine_dir, else $REFLECTOR_ENGINE_DIR, else engines/ in a writable source tree,
    else ~/.cache/reflector_ros/engines (installed packages are often read-only)."""
    if engine_dir:
        return Path(engine_dir).expanduser()
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    source_engines = Path(__file__).resolve().parents[2] / "engines"
    if source_engines.is_dir() and os.access(source_engines, os.W_OK):
        return source_engines
    return Path.home() / ".cache" / "reflector_ros" / "engines"


def engine_paths(cache_dir: Path, stem: str, key: EngineKey) -> tuple[Path, Path]:
    """(engine file, JSON sidecar) for this key."""
    name = f"{stem}-{key.digest()[:16]}"
    return cache_dir / f"{name}.engine", cache_dir / f"{name}.json"


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder then rename, so a crash or a parallel
    reader never sees half an engine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lookup(cache_dir: Path, stem: str, key: EngineKey) -> Path | None:
    """The cached engine for key, or None when absent, empty, or its sidecar is
    unreadable or disagrees (those are logged: the caller then rebuilds)."""
    engine, sidecar = engine_paths(cache_dir, stem, key)
    if not engine.exists():
        return None
    if engine.stat().st_size == 0:
        LOG.warning("engine %s is empty (interrupted build?); rebuilding", engine)
        return None
    try:
        stored = EngineKey.from_json(json.loads(sidecar.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as err:
        LOG.warning("engine sidecar %s unreadable (%s); rebuilding", sidecar, err)
        return None
    if stored != key:
        diff = [k for k, v in key.to_json().items() if stored.to_json().get(k) != v]
        LOG.warning("engine %s is stale (%s changed); rebuilding", engine, ", ".join(diff))
        return None
    return engine


def store(cache_dir: Path, stem: str, key: EngineKey, serialized: bytes) -> Path:
    """Atomically write the engine then its sidecar (the sidecar last: its presence
    marks a finished engine)."""
    if not serialized:
        raise ValueError("refusing to cache an empty engine")
    engine, sidecar = engine_paths(cache_dir, stem, key)
    atomic_write(engine, serialized)
    atomic_write(sidecar, json.dumps(key.to_json(), indent=2, sort_keys=True) + "\n")
    return engine


def invalidate(engine: Path) -> None:
    """Drop an engine the runtime could not deserialise, and its sidecar."""
    LOG.warning("engine %s failed to deserialise; deleting it so it is rebuilt", engine)
    engine.unlink(missing_ok=True)
    engine.with_suffix(".json").unlink(missing_ok=True)


def get_or_build(cache_dir: Path, stem: str, key: EngineKey, build: Callable[[], bytes],
                 load: Callable[[bytes], T | None]) -> tuple[T, Path, bool]:
    """Load the cached engine, or build, store and load it. ``load`` returns None (or
    raises) when deserialisation fails; the corrupt file is then rebuilt once.
    Returns (loaded engine, path, built_now)."""
    path = lookup(cache_dir, stem, key)
    if path is not None:
        try:
            loaded = load(path.read_bytes())
        except Exception as err:  # runtime-specific errors: treat as corrupt
            LOG.warning("loading %s raised %s", path, err)
            loaded = None
        if loaded is not None:
            return loaded, path, False
        invalidate(path)
    data = build()
    path = store(cache_dir, stem, key, data)
    obj = load(data)
    if obj is None:
        raise RuntimeError(f"a freshly built engine {path} failed to deserialise")
    return obj, path, True
