"""Engine cache: keys, stale/corrupt handling, atomic writes (no TensorRT needed)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest

from reflector_ros.backends import engine_cache as ec


@pytest.fixture()
def onnx_file(tmp_path: Path) -> Path:
    p = tmp_path / "model.onnx"
    p.write_bytes(b"pretend onnx bytes" * 100)
    return p


def _key(onnx: Path, **kw) -> ec.EngineKey:
    args = dict(trt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7),
                precision="fp16", input_shape=(1, 3, 256, 320))
    args.update(kw)
    return ec.make_key(onnx, **args)


def test_key_changes_with_every_component(onnx_file: Path, tmp_path: Path) -> None:
    base = _key(onnx_file)
    assert base.compute_capability == "8.7"
    variants = [
        _key(onnx_file, trt_version="8.5.2"),
        _key(onnx_file, gpu_name="RTX 4090"),
        _key(onnx_file, compute_capability="8.9"),
        _key(onnx_file, precision="int8"),
        _key(onnx_file, input_shape=(1, 3, 128, 160)),
    ]
    other = tmp_path / "other.onnx"
    other.write_bytes(onnx_file.read_bytes() + b"x")
    variants.append(_key(other))
    digests = {base.digest()} | {v.digest() for v in variants}
    assert len(digests) == len(variants) + 1
    names = {ec.engine_paths(tmp_path, "m", k)[0].name for k in [base, *variants]}
    assert len(names) == len(variants) + 1
    assert _key(onnx_file).digest() == base.digest()  # deterministic


def test_bad_precision_refused(onnx_file: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        _key(onnx_file, precision="fp8")


def test_store_then_lookup_and_sidecar(onnx_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "engines"
    key = _key(onnx_file)
    assert ec.lookup(cache, "model", key) is None
    path = ec.store(cache, "model", key, b"ENGINE" * 10)
    assert path.name == f"model-{key.digest()[:16]}.engine"
    assert ec.lookup(cache, "model", key) == path
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["onnx_sha256"] == ec.file_sha256(onnx_file)
    assert side["gpu_name"] == "Orin" and side["input_shape"] == [1, 3, 256, 320]
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_stale_sidecar_is_rebuilt(onnx_file: Path, tmp_path: Path, caplog) -> None:
    key = _key(onnx_file)
    path = ec.store(tmp_path, "model", key, b"ENGINE")
    stale = replace(key, trt_version="8.5.2")
    path.with_suffix(".json").write_text(json.dumps(stale.to_json()))
    with caplog.at_level(logging.WARNING):
        assert ec.lookup(tmp_path, "model", key) is None
    assert "stale" in caplog.text and "trt_version" in caplog.text


@pytest.mark.parametrize("damage", ["empty", "sidecar_garbage", "sidecar_missing"])
def test_corrupt_cache_entries_are_rebuilt(onnx_file: Path, tmp_path: Path, caplog, damage: str) -> None:
    key = _key(onnx_file)
    path = ec.store(tmp_path, "model", key, b"ENGINE")
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "sidecar_garbage":
        path.with_suffix(".json").write_text("{not json")
    else:
        path.with_suffix(".json").unlink()
    with caplog.at_level(logging.WARNING):
        assert ec.lookup(tmp_path, "model", key) is None
    assert caplog.records


def test_get_or_build_rebuilds_when_deserialisation_fails(onnx_file: Path, tmp_path: Path) -> None:
    key = _key(onnx_file)
    ec.store(tmp_path, "model", key, b"CORRUPT")
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        return b"GOOD"

    def load(data: bytes) -> object:
        return None if data == b"CORRUPT" else data.decode()

    obj, path, built = ec.get_or_build(tmp_path, "model", key, build, load)
    assert (obj, built, len(builds)) == ("GOOD", True, 1)
    assert path.read_bytes() == b"GOOD"
    obj, _, built = ec.get_or_build(tmp_path, "model", key, build, load)
    assert (obj, built, len(builds)) == ("GOOD", False, 1)  # served from cache now


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "x.engine"
    ec.atomic_write(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        ec.atomic_write(target, b"new-but-interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.engine"]  # no temp file left


def test_store_refuses_empty_engine(onnx_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        ec.store(tmp_path, "m", _key(onnx_file), b"")


def test_cache_dir_precedence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(ec.ENV_DIR, str(tmp_path / "env"))
    assert ec.default_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert ec.default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv(ec.ENV_DIR)
    d = ec.default_cache_dir()
    assert d.name == "engines"


def test_cached_input_sizes_are_this_models_on_this_gpu(tmp_path: Path) -> None:
    """What a canonical-camera model's TensorRT backend loads at start: the sizes cached for
    exactly these ONNX bytes, this TensorRT, this GPU and precision, newest first."""
    import os

    from reflector_ros.backends.engine_build import cached_input_sizes

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"model one")
    other = tmp_path / "other" / "m.onnx"
    other.parent.mkdir()
    other.write_bytes(b"model two")
    cache = tmp_path / "engines"
    for i, (path, trt, gpu, prec, hw) in enumerate([
            (onnx, "10.3.0", ("Orin", "8.7"), "fp16", (203, 305)),
            (onnx, "10.3.0", ("Orin", "8.7"), "fp16", (233, 311)),
            (onnx, "10.3.0", ("Orin", "8.7"), "fp32", (256, 341)),      # another precision
            (onnx, "8.5.2", ("Orin", "8.7"), "fp16", (120, 160)),       # another TensorRT
            (onnx, "10.3.0", ("RTX 4090", "8.9"), "fp16", (130, 170)),  # another GPU
            (other, "10.3.0", ("Orin", "8.7"), "fp16", (140, 180))]):   # another model, same stem
        key = ec.make_key(path, trt, gpu[0], gpu[1], prec, (1, 3, *hw))
        engine = ec.store(cache, "m", key, b"engine bytes")
        os.utime(engine.with_suffix(".json"), (1000 + i, 1000 + i))
    (cache / "m-garbage.json").write_text("{not json")
    assert cached_input_sizes(onnx, cache, "fp16", "10.3.0", ("Orin", "8.7")) == [(233, 311), (203, 305)]
    assert cached_input_sizes(onnx, cache, "int8", "10.3.0", ("Orin", "8.7")) == []
    assert cached_input_sizes(onnx, tmp_path / "none", "fp16", "10.3.0", ("Orin", "8.7")) == []


def test_build_engine_input_size_from_the_camera() -> None:
    """`build-engine --camera W H FX` builds for the size the node will use for that camera
    (meta.network_input, as the pipeline computes it); a canonical model given no size is
    refused rather than built at a size no camera uses."""
    import pytest

    from reflector_ros.backends.engine_build import engine_input_size
    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.meta import ModelMeta, network_input

    meta = ModelMeta(input_mode="canonical", focal_canonical=280.0)
    net = network_input(Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480), meta)
    assert engine_input_size(meta, None, [640, 480, 525]) == (net.height, net.width) == (256, 341)
    assert engine_input_size(meta, [203, 305], None) == (203, 305)
    for size, camera, said in ((None, None, "--camera WIDTH HEIGHT FX"), ([203, 305], [640, 480, 525], "not both"),
                               (None, [640, 480, 0], "focal length"), (None, [640.5, 480, 525], "whole pixels"),
                               ([8, 305], None, "[16, 4096]")):
        with pytest.raises(ValueError, match=said.replace("[", r"\[").replace("]", r"\]")):
            engine_input_size(meta, size, camera)
    assert engine_input_size(ModelMeta(input_mode="fixed"), None, None) is None
