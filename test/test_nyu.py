"""NYU loaders on real files in both formats, written here (a v7.3 .mat via h5py, sync folders)."""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from reflector_ros.core.errors import InputError
from reflector_ros.data.nyu import NYU_CX, NYU_FX, NYU_FY, NYUMatDataset, NYUSyncDataset

H, W, N = 6, 10, 5  # non-square: a wrong transpose cannot go unnoticed


def frames() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.5, (N, H, W)).astype(np.float32)
    depths[:, 0, 0] = 0.0
    return images, depths


def write_mat73(path: Path, images: np.ndarray, depths: np.ndarray, **extra: np.ndarray) -> Path:
    """What MATLAB's save -v7.3 writes: HDF5 with a 512-byte MATLAB userblock, arrays dims reversed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("images", data=images.transpose(0, 3, 2, 1))   # (N, H, W, 3) -> (N, 3, W, H)
        f.create_dataset("depths", data=depths.transpose(0, 2, 1))      # (N, H, W) -> (N, W, H)
        f["images"].attrs["MATLAB_class"] = np.bytes_("uint8")
        f["depths"].attrs["MATLAB_class"] = np.bytes_("single")
        for key, value in extra.items():
            f.create_dataset(key, data=value)
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(512, b"\x00"))
    return path


@pytest.fixture()
def mat_file(tmp_path: Path) -> Path:
    images, depths = frames()
    return write_mat73(tmp_path / "nyu_depth_v2_labeled.mat", images, depths)


def test_mat_has_matlab_header_and_reads_back(mat_file: Path) -> None:
    assert mat_file.read_bytes()[:10] == b"MATLAB 7.3"
    images, depths = frames()
    ds = NYUMatDataset(mat_file)
    assert len(ds) == N
    for i in range(N):
        s = ds[i]
        assert s.image.shape == (H, W, 3) and s.depth.shape == (H, W)
        np.testing.assert_array_equal(s.image, images[i])
        np.testing.assert_array_equal(s.depth, depths[i])
        assert s.depth.dtype == np.float32 and s.depth[0, 0] == 0.0
    # a plain resize of the 640x480 calibration for this tiny frame
    s = ds[0]
    assert s.camera.fx == pytest.approx(NYU_FX * W / 640) and s.camera.fy == pytest.approx(NYU_FY * H / 480)
    assert s.camera.cx == pytest.approx((NYU_CX + 0.5) * W / 640 - 0.5)
    assert ds[-1].name == f"nyu_{N:04d}"


def test_full_size_frame_gets_standard_intrinsics(tmp_path: Path) -> None:
    images = np.zeros((1, 480, 640, 3), np.uint8)
    images[0, 10, 600] = (1, 2, 3)
    depths = np.ones((1, 480, 640), np.float32)
    s = NYUMatDataset(write_mat73(tmp_path / "full.mat", images, depths))[0]
    assert (s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy) == (518.8579, 519.4696, 325.5824, 253.7362)
    assert tuple(s.image[10, 600]) == (1, 2, 3)


def test_split_text_and_mat(tmp_path: Path, mat_file: Path) -> None:
    images, _ = frames()
    (tmp_path / "test.txt").write_text("2\n5\n")
    ds = NYUMatDataset(mat_file, split=tmp_path / "test.txt")
    assert len(ds) == 2
    np.testing.assert_array_equal(ds[1].image, images[4])
    split73 = tmp_path / "splits.mat"
    with h5py.File(split73, "w") as f:
        f.create_dataset("testNdxs", data=np.array([[1.0, 3.0]]))  # MATLAB column vector, transposed
    ds = NYUMatDataset(mat_file, split=split73)
    assert [s.name for s in ds] == ["nyu_0001", "nyu_0003"]


def test_bad_inputs(tmp_path: Path, mat_file: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        NYUMatDataset(tmp_path / "none.mat")
    v5 = tmp_path / "v5.mat"
    v5.write_bytes(b"MATLAB 5.0 MAT-file".ljust(128, b" ") + b"\x00" * 64)
    with pytest.raises(InputError, match="v7.3"):
        NYUMatDataset(v5)
    with pytest.raises(InputError, match="v5"):
        NYUMatDataset(mat_file, split=v5)
    (tmp_path / "bad.txt").write_text("0\n")
    with pytest.raises(InputError, match="1-based"):
        NYUMatDataset(mat_file, split=tmp_path / "bad.txt")
    (tmp_path / "big.txt").write_text(f"{N + 1}\n")
    with pytest.raises(InputError, match=f"1..{N}"):
        NYUMatDataset(mat_file, split=tmp_path / "big.txt")
    other = tmp_path / "other.mat"
    with h5py.File(other, "w") as f:
        f.create_dataset("rgb", data=np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(InputError, match="no .*images"):
        NYUMatDataset(other)
    ds = NYUMatDataset(mat_file)
    with pytest.raises(IndexError):
        ds[N]


def test_mat_dataset_pickles_lazily(mat_file: Path) -> None:
    ds = NYUMatDataset(mat_file)
    _ = ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(copy[2].depth, ds[2].depth)


def write_sync(root: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    rgbs, mms = [], []
    lines = []
    rng = np.random.default_rng(1)
    for i, (scene, ext) in enumerate([("bathroom", ".png"), ("kitchen_0028b", ".jpg")]):
        (root / scene).mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[0:H, 0:W]
        rgb = np.stack([xx * 20, yy * 30, np.full_like(xx, 100 + i)], -1).astype(np.uint8)
        mm = rng.integers(400, 9000, (H, W)).astype(np.uint16)
        mm[2, 3] = 0
        cv2.imwrite(str(root / scene / f"rgb_{i:05d}{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 100])
        cv2.imwrite(str(root / scene / f"sync_depth_{i:05d}.png"), mm)
        lead = "/" if i else ""  # BTS train lists start with a slash
        lines.append(f"{lead}{scene}/rgb_{i:05d}{ext} {lead}{scene}/sync_depth_{i:05d}.png 518.8579")
        rgbs.append(rgb)
        mms.append(mm)
    split = root / "nyudepthv2_test_files_with_gt.txt"
    split.write_text("\n".join(lines) + "\n\n")
    return split, rgbs, mms


def test_sync_layout(tmp_path: Path) -> None:
    split, rgbs, mms = write_sync(tmp_path)
    ds = NYUSyncDataset(tmp_path, split)
    assert len(ds) == 2
    s0, s1 = ds[0], ds[1]
    np.testing.assert_array_equal(s0.image, rgbs[0])                       # PNG: exact
    assert np.abs(s1.image.astype(int) - rgbs[1]).mean() < 6               # JPEG: close (channel order right)
    np.testing.assert_allclose(s0.depth, mms[0] / 1000.0, rtol=1e-6)
    assert s0.depth[2, 3] == 0.0 and s1.depth.dtype == np.float32
    assert s0.camera.fx == pytest.approx(518.8579) and s0.camera.fy == pytest.approx(519.4696)
    assert s0.name == "bathroom/rgb_00000"


def test_sync_bad_inputs(tmp_path: Path) -> None:
    split, _, _ = write_sync(tmp_path)
    (tmp_path / "short.txt").write_text("a.jpg b.png\n")
    with pytest.raises(InputError, match="expected 'rgb_path depth_path focal'"):
        NYUSyncDataset(tmp_path, tmp_path / "short.txt")
    (tmp_path / "missing.txt").write_text("nope/rgb.jpg nope/d.png 518.8\n")
    with pytest.raises(InputError, match="cannot read image"):
        NYUSyncDataset(tmp_path, tmp_path / "missing.txt")[0]
    cv2.imwrite(str(tmp_path / "bathroom" / "sync_depth_00000.png"), np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="uint16"):
        NYUSyncDataset(tmp_path, split)[0]
    with pytest.raises(InputError, match="split file not found"):
        NYUSyncDataset(tmp_path, tmp_path / "none.txt")
