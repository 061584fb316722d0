"""The manifest folder format: write -> read round trip, frame subsets, clear refusals, the real sequence."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from reflector_ros.core.errors import InputError
from reflector_ros.data.manifest import ManifestDataset, parse_indices, read_manifest, write_manifest
from reflector_ros.data.sample import Sample
from reflector_ros.data.synthetic import render

H, W = 48, 64


def _samples() -> list[Sample]:
    out = [render(seed, H, W) for seed in range(3)]
    # a far region beyond the uint16 mm range, and some invalid pixels
    far = out[2].depth.copy()
    far[:5, :7] = 70.0
    far[-3:, -4:] = 0.0
    out[2] = Sample(out[2].image, far, out[2].camera, out[2].name)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[Sample]]:
    root = tmp_path_factory.mktemp("manifest")
    samples = _samples()
    write_manifest(root, samples, name="unit round trip")
    return root, samples


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_round_trip(folder) -> None:
    root, samples = folder
    ds = ManifestDataset(root)
    assert len(ds) == 3 and ds.name == "unit round trip"
    for s, r in zip(samples, ds):
        assert r.image.shape == (H, W, 3) and r.image.dtype == np.uint8
        assert r.depth.dtype == np.float32 and r.depth.shape == (H, W)
        assert (r.camera.fx, r.camera.fy, r.camera.cx, r.camera.cy) == (s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy)
        ok = (s.depth > 0) & (s.depth <= 65.535)
        assert np.abs(r.depth[ok] - s.depth[ok]).max() <= 0.0005 + 1e-6
        assert (r.depth[~ok] == 0).all()
        # JPEG q95 keeps the colours close
        assert np.abs(r.image.astype(int) - s.image.astype(int)).mean() < 4
    far = ds[2].depth
    assert (far[:5, :7] == 0).all() and (far[-3:, -4:] == 0).all()
    assert (far[10:20, 10:20] > 0).all()


def test_frame_subsets(folder) -> None:
    root, samples = folder
    assert [s.name for s in ManifestDataset(root, "0:2")] == ["000000", "000001"]
    assert [s.name for s in ManifestDataset(root, "1:")] == ["000001", "000002"]
    assert [s.name for s in ManifestDataset(root, "::2")] == ["000000", "000002"]
    assert [s.name for s in ManifestDataset(root, "2")] == ["000002"]
    assert [s.name for s in ManifestDataset(root, [2, 0])] == ["000002", "000000"]
    assert parse_indices("0:250", 373) == list(range(250))
    assert parse_indices("250:", 373) == list(range(250, 373))
    with pytest.raises(InputError, match="expected START:STOP"):
        ManifestDataset(root, "a:b")
    with pytest.raises(InputError, match="out of range for 3 frames"):
        ManifestDataset(root, "1:5")
    with pytest.raises(InputError, match="out of range"):
        ManifestDataset(root, [5])
    with pytest.raises(InputError, match="selects no frame of 3"):
        ManifestDataset(root, "3:")
    with pytest.raises(IndexError):
        ManifestDataset(root)[3]


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no manifest.json"):
        ManifestDataset(tmp_path)


def test_corrupt_json(folder, tmp_path: Path) -> None:
    root = _copy(folder[0], tmp_path / "m")
    text = (root / "manifest.json").read_text()
    (root / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match="not valid JSON"):
        ManifestDataset(root)
    (root / "manifest.json").write_text(json.dumps({"frames": [{"rgb": "rgb/000000.jpg"}]}))
    with pytest.raises(InputError, match="lacks depth"):
        read_manifest(root)


def test_missing_rgb(folder, tmp_path: Path) -> None:
    root = _copy(folder[0], tmp_path / "m")
    (root / "rgb" / "000001.jpg").unlink()
    ds = ManifestDataset(root)   # lazy: the index opens, the frame load refuses
    ds[0]
    with pytest.raises(InputError, match="missing file rgb/000001.jpg"):
        ds[1]


def test_depth_size_mismatch(folder, tmp_path: Path) -> None:
    root = _copy(folder[0], tmp_path / "m")
    cv2.imwrite(str(root / "depth" / "000000.png"), np.full((H // 2, W // 2), 1000, np.uint16))
    with pytest.raises(InputError, match="depth 32x24, manifest says 64x48"):
        ManifestDataset(root)[0]


def test_non_uint16_depth(folder, tmp_path: Path) -> None:
    root = _copy(folder[0], tmp_path / "m")
    cv2.imwrite(str(root / "depth" / "000000.png"), np.full((H, W), 7, np.uint8))
    with pytest.raises(InputError, match="single-channel uint16, got uint8"):
        ManifestDataset(root)[0]


def test_real_sequence(hololens_dir: Path) -> None:
    ds = ManifestDataset(hololens_dir)
    assert len(ds) == 373
    s = ds[0]
    assert s.image.shape == (360, 540, 3) and s.depth.shape == (360, 540)
    assert s.camera.fx == pytest.approx(495.57, abs=0.01) and s.camera.fy == pytest.approx(495.48, abs=0.01)
    assert s.camera.cx == pytest.approx(269.50, abs=0.01) and s.camera.cy == pytest.approx(169.19, abs=0.01)
    valid = s.depth > 0
    # README: "about 50-78 %" valid; frame 0 is at 78.3 %
    assert 0.50 <= valid.mean() <= 0.80
    assert 0.8 <= s.depth[valid].min() and s.depth[valid].max() <= 7.2
    assert [f.name for f in ManifestDataset(hololens_dir, "250:")][:1] == [ds[250].name]
    assert len(ManifestDataset(hololens_dir, "0:250")) == 250
