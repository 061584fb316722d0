"""KITTI (Eigen split, BTS-style split files): the outdoor metric benchmark.

Split lines: ``IMAGE_REL GT_REL FOCAL`` with IMAGE_REL under the raw data root
(``2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png``), GT_REL under
the annotated-depth root (``2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/...``)
or ``None`` where KITTI has no ground truth (45 of the 697 Eigen test frames).
GT is a 16-bit PNG, metres = value / 256, 0 invalid.

Intrinsics come from the date folder's ``calib_cam_to_cam.txt`` (``P_rect_02`` for
image_02, ``P_rect_03`` for image_03: the rectified camera the images are in), scaled
if ``S_rect_0x`` differs from the image size. Without that file: fx = fy = the split
line's focal and the principal point at the image centre (an approximation: KITTI's
is a few pixels off centre).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.data.splits import read_split_file
from reflector_ros.data.nyu import read_png_u16, read_rgb
from reflector_ros.data.sample import Sample

KITTI_DEPTH_SCALE = 256.0
_CAM = re.compile(r"image_0([0-3])")


def parse_calib_cam_to_cam(path: Path) -> dict[str, list[float]]:
    """Numeric rows ``KEY: v v v ...`` of a KITTI calibration file (text rows such as calib_time skipped)."""
    out: dict[str, list[float]] = {}
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"cannot read KITTI calibration {path}: {err.strerror or err}") from None
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = [float(v) for v in rest.split()]
        except ValueError:
            continue
    return out


def rect_intrinsics(calib: dict[str, list[float]], cam: str, width: int, height: int,
                    source: Path) -> Intrinsics:
    """The rectified camera ``cam`` ("02") at the image's size (S_rect_ gives the size P_rect_
    was made at; without it, P_rect_ is taken at the image's own size)."""
    p = calib.get(f"P_rect_{cam}")
    if p is None or len(p) != 12:
        raise InputError(f"{source}: no 12-value P_rect_{cam} row")
    fx, cx, fy, cy = p[0], p[2], p[5], p[6]
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise InputError(f"{source}: P_rect_{cam} has an invalid focal ({fx}, {fy})")
    size = calib.get(f"S_rect_{cam}")
    if size and len(size) == 2 and size[0] > 0 and size[1] > 0 and (size[0], size[1]) != (width, height):
        return Intrinsics(fx, fy, cx, cy, int(size[0]), int(size[1])).scaled(width, height)
    return Intrinsics(fx, fy, cx, cy, width, height)


class KittiDataset(Sequence[Sample]):
    """Eigen-split frames; ``skip_missing`` leaves out frames without a GT file.

    With ``skip_missing=False`` a ``None`` GT gives an all-zero (invalid) depth, so
    every listed frame can still be run through a model.
    """

    def __init__(self, data_root: str | Path, gt_root: str | Path, split_file: str | Path,
                 skip_missing: bool = True) -> None:
        self.data_root, self.gt_root = Path(data_root), Path(gt_root)
        split = Path(split_file)
        if not self.data_root.is_dir():
            raise InputError(f"KITTI data root is not a folder: {self.data_root}")
        self.items: list[tuple[str, str | None, float]] = []
        self.skipped = 0
        for image, depth, focal in read_split_file(split, "image_path gt_path|None focal"):
            gt: str | None = None if depth == "None" else depth
            if skip_missing and (gt is None or not (self.gt_root / gt).is_file()):
                self.skipped += 1
                continue
            self.items.append((image, gt, focal))
        if not self.items:
            raise InputError(f"{split}: no frame with ground truth under {self.gt_root} "
                             f"({self.skipped} listed frames skipped)")
        self._calib: dict[str, dict[str, list[float]] | None] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _calibration(self, date: str) -> tuple[dict[str, list[float]], Path] | None:
        path = self.data_root / date / "calib_cam_to_cam.txt"
        if date not in self._calib:
            self._calib[date] = parse_calib_cam_to_cam(path) if path.is_file() else None
        calib = self._calib[date]
        return (calib, path) if calib is not None else None

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        image_rel, gt_rel, focal = self.items[i]
        image = read_rgb(self.data_root / image_rel)
        h, w = image.shape[:2]
        if gt_rel is None:
            depth = np.zeros((h, w), np.float32)
        else:
            depth = read_png_u16(self.gt_root / gt_rel, KITTI_DEPTH_SCALE)
            if depth.shape != (h, w):
                raise InputError(f"{gt_rel}: depth {depth.shape} does not match image {(h, w)} ({image_rel})")
        cam = _CAM.search(image_rel)
        found = self._calibration(Path(image_rel).parts[0])
        if found is not None and cam is not None:
            camera = rect_intrinsics(found[0], f"0{cam.group(1)}", w, h, found[1])
        else:
            camera = Intrinsics.centred(focal, w, h)
        return Sample(image, depth, camera, name=Path(image_rel).with_suffix("").as_posix())
