"""NYU Depth v2, the main indoor metric benchmark, in its two common on-disk forms.

- The official labelled ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3, i.e. HDF5 behind a
  512-byte MATLAB header), read lazily with h5py. MATLAB stores ``images`` as
  H x W x 3 x N; HDF5 sees the reversed order (N, 3, W, H), so each frame is transposed
  back to (H, W, 3). ``depths`` likewise (N, W, H) -> (H, W), metres.
- The BTS/AdaBins "sync" folders with an Eigen split file of lines
  ``scene/rgb_00000.jpg scene/sync_depth_00000.png 518.8579`` (depth PNG uint16 mm).

Split indices (the Eigen test split: 654 of the 1449 labelled frames) come from a text
file (one 1-based index per line) or a v7.3 .mat holding ``testNdxs``. The official
``splits.mat`` is MATLAB v5, which h5py cannot read and scipy is not installed here:
convert it once to text (Octave/MATLAB: ``dlmwrite('test.txt', testNdxs)``).

Intrinsics: the standard NYU RGB calibration (RGBDemo/OpenCV, 0-based pixel centres).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.limits import check_size
from reflector_ros.core.errors import InputError
from reflector_ros.data.splits import read_split_file
from reflector_ros.data.sample import Sample

NYU_FX, NYU_FY, NYU_CX, NYU_CY = 518.8579, 519.4696, 325.5824, 253.7362
NYU_HW = (480, 640)


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 from a JPEG/PNG file; size is checked from the header before decoding."""
    from reflector_ros.core.decode import decode_compressed

    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read image {path}: {err.strerror or err}") from None
    try:
        return decode_compressed(data)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None


def read_png_u16(path: Path, scale: float) -> np.ndarray:
    """float32 metres = uint16 PNG value / scale (0 stays 0 = invalid)."""
    from reflector_ros.core.decode import image_size_from_header

    try:
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as err:
        raise InputError(f"cannot read depth {path}: {err.strerror or err}") from None
    try:
        kind, w, h = image_size_from_header(data)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    if kind != "png":
        raise InputError(f"depth {path} must be a 16-bit PNG, got {kind}")
    check_size(w, h, f"depth {path}")
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InputError(f"depth {path}: corrupt PNG")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise InputError(f"depth {path} must be single-channel uint16, got {raw.dtype} with shape {raw.shape}")
    return raw.astype(np.float32) / np.float32(scale)


def read_split_indices(path: Path, n: int) -> list[int]:
    """0-based frame indices from a text file of 1-based indices or a v7.3 .mat with testNdxs."""
    if not path.is_file():
        raise InputError(f"split file not found: {path}")
    if path.suffix.lower() == ".mat":
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "testNdxs" not in f:
                    raise InputError(f"split {path} has no 'testNdxs' (datasets: {sorted(f.keys())})")
                values = np.asarray(f["testNdxs"][()], dtype=np.float64).reshape(-1)
        except OSError:
            raise InputError(f"split {path} is not a MATLAB v7.3 (HDF5) file; the official splits.mat is v5: "
                             "write testNdxs to a text file, one 1-based index per line") from None
    else:
        tokens = path.read_text().split()
        try:
            values = np.array([float(t) for t in tokens], dtype=np.float64)
        except ValueError:
            raise InputError(f"split {path}: expected one integer (1-based frame index) per line") from None
    if values.size == 0:
        raise InputError(f"split {path} lists no frame")
    if not np.all(values == np.round(values)) or values.min() < 1 or values.max() > n:
        raise InputError(f"split {path}: indices must be integers in 1..{n} (1-based, MATLAB style)")
    return [int(v) - 1 for v in values]


class NYUMatDataset(Sequence[Sample]):
    """Frames of the labelled .mat, opened on first access in each process."""

    def __init__(self, path: str | Path, split: str | Path | None = None) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"NYU .mat not found: {self.path}")
        try:
            with h5py.File(self.path, "r") as f:
                missing = [k for k in ("images", "depths") if k not in f]
                if missing:
                    raise InputError(f"{self.path} has no {missing} dataset(s); is it nyu_depth_v2_labeled.mat? "
                                     f"(found {sorted(f.keys())})")
                ishape, dshape = f["images"].shape, f["depths"].shape
                idtype = f["images"].dtype
        except OSError:
            raise InputError(f"{self.path} is not a MATLAB v7.3 (HDF5) file: cannot read it with h5py") from None
        if len(ishape) != 4 or ishape[1] != 3 or idtype != np.uint8:
            raise InputError(f"{self.path}: images must be (N, 3, W, H) uint8 in HDF5 order, got {ishape} {idtype}")
        if tuple(dshape) != (ishape[0], ishape[2], ishape[3]):
            raise InputError(f"{self.path}: depths {dshape} do not match images {ishape}")
        check_size(int(ishape[2]), int(ishape[3]), f"{self.path}: frame")
        n = int(ishape[0])
        self.height, self.width = int(ishape[3]), int(ishape[2])
        self.indices = read_split_indices(Path(split), n) if split is not None else list(range(n))
        self._file: Any = None
        self._pid = -1

    def _h5(self) -> Any:
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": -1}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        k = self.indices[i]
        f = self._h5()
        image = np.ascontiguousarray(f["images"][k].transpose(2, 1, 0))   # (3, W, H) -> (H, W, 3)
        depth = np.ascontiguousarray(f["depths"][k].T, dtype=np.float32)   # (W, H) -> (H, W)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        return Sample(image, depth, _intrinsics(self.width, self.height), name=f"nyu_{k + 1:04d}")


def _intrinsics(width: int, height: int) -> Intrinsics:
    """Standard calibration at 640x480; for other sizes assume a plain resize of it."""
    return Intrinsics(NYU_FX, NYU_FY, NYU_CX, NYU_CY, NYU_HW[1], NYU_HW[0]).scaled(width, height)


class NYUSyncDataset(Sequence[Sample]):
    """The BTS/AdaBins folder layout with an Eigen split file.

    ``gt_root`` defaults to ``root`` (the test set keeps both side by side). The focal
    in the split line is used as fx (fy keeps the NYU aspect fy/fx); the principal point
    is the standard one at 640x480, scaled for other sizes.
    """

    def __init__(self, root: str | Path, split_file: str | Path, gt_root: str | Path | None = None) -> None:
        self.root = Path(root)
        self.gt_root = Path(gt_root) if gt_root is not None else self.root
        split = Path(split_file)
        if not self.root.is_dir():
            raise InputError(f"NYU sync root is not a folder: {self.root}")
        self.items: list[tuple[str, str, float]] = read_split_file(split, "rgb_path depth_path focal")
        if not self.items:
            raise InputError(f"split file {split} lists no frame")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        rgb_rel, depth_rel, focal = self.items[i]
        image = read_rgb(self.root / rgb_rel)
        depth = read_png_u16(self.gt_root / depth_rel, 1000.0)
        if depth.shape != image.shape[:2]:
            raise InputError(f"{depth_rel}: depth {depth.shape} does not match image {image.shape[:2]} ({rgb_rel})")
        h, w = depth.shape
        c = _intrinsics(w, h)
        camera = Intrinsics(focal, focal * NYU_FY / NYU_FX, c.cx, c.cy, w, h)
        return Sample(image, depth, camera, name=Path(rgb_rel).with_suffix("").as_posix())
