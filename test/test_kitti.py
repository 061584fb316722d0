"""KittiDataset on a small KITTI tree written here: raw images, calib file, 16-bit GT PNGs, Eigen split."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reflector_ros.core.errors import InputError
from reflector_ros.data.kitti import KittiDataset

H, W = 12, 40  # wide like KITTI, tiny for speed
P2 = (721.5377, 609.5593, 172.854)  # fx(=fy), cx, cy as in 2011_09_26's P_rect_02
P3 = (700.0, 600.0, 170.0)


def calib_text(size: tuple[int, int]) -> str:
    def p_row(fx: float, cx: float, cy: float, tx: float) -> str:
        return " ".join(f"{v:.6e}" for v in (fx, 0, cx, tx, 0, fx, cy, 0.2, 0, 0, 1, 0.003))

    return "\n".join([
        "calib_time: 09-Jan-2012 13:57:47",
        "corner_dist: 9.950000e-02",
        "S_02: 1.392000e+03 5.120000e+02",
        "K_02: 9.597910e+02 0.000000e+00 6.960217e+02 0.000000e+00 9.569251e+02 2.241806e+02 0 0 1",
        f"S_rect_02: {size[0]:.6e} {size[1]:.6e}",
        "R_rect_02: 1 0 0 0 1 0 0 0 1",
        "P_rect_02: " + p_row(*P2, 44.85728),
        f"S_rect_03: {size[0]:.6e} {size[1]:.6e}",
        "P_rect_03: " + p_row(*P3, -339.5242),
    ]) + "\n"


def write_frame(root: Path, gt_root: Path, date: str, drive: str, cam: str, idx: int,
                with_gt: bool, rng: np.random.Generator) -> tuple[str, str, np.ndarray, np.ndarray | None]:
    image_rel = f"{date}/{drive}/image_{cam}/data/{idx:010d}.png"
    gt_rel = f"{drive}/proj_depth/groundtruth/image_{cam}/{idx:010d}.png"
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    (root / image_rel).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / image_rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    gt = None
    if with_gt:
        gt = rng.integers(256, 80 * 256, (H, W)).astype(np.uint16)
        gt[rng.random((H, W)) < 0.8] = 0  # sparse LiDAR: mostly invalid
        (gt_root / gt_rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(gt_root / gt_rel), gt)
    return image_rel, gt_rel, rgb, gt


@pytest.fixture()
def kitti(tmp_path: Path):
    rng = np.random.default_rng(0)
    root, gt_root = tmp_path / "raw", tmp_path / "gt"
    (root / "2011_09_26").mkdir(parents=True)
    (root / "2011_09_26" / "calib_cam_to_cam.txt").write_text(calib_text((W, H)))
    (root / "2011_09_28").mkdir(parents=True)
    (root / "2011_09_28" / "calib_cam_to_cam.txt").write_text(calib_text((2 * W, 2 * H)))  # resized images
    frames = [
        write_frame(root, gt_root, "2011_09_26", "2011_09_26_drive_0002_sync", "02", 69, True, rng),
        write_frame(root, gt_root, "2011_09_26", "2011_09_26_drive_0002_sync", "03", 70, True, rng),
        write_frame(root, gt_root, "2011_09_26", "2011_09_26_drive_0009_sync", "02", 5, False, rng),
        write_frame(root, gt_root, "2011_09_28", "2011_09_28_drive_0001_sync", "02", 1, True, rng),
        write_frame(root, gt_root, "2011_10_03", "2011_10_03_drive_0047_sync", "02", 7, True, rng),  # no calib
    ]
    lines = [f"{img} {gt if g is not None else 'None'} 721.5377" for img, gt, _, g in frames]
    lines.append(f"{frames[0][0]} 2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000999.png 721.5377")
    split = tmp_path / "eigen_test_files_with_gt.txt"
    split.write_text("\n".join(lines) + "\n")
    return root, gt_root, split, frames


def test_values_intrinsics_and_skipping(kitti) -> None:
    root, gt_root, split, frames = kitti
    ds = KittiDataset(root, gt_root, split)
    assert len(ds) == 4 and ds.skipped == 2  # "None" GT and a listed file that does not exist
    kept = [f for f in frames if f[3] is not None]
    for s, (_, _, rgb, gt) in zip(ds, kept):
        np.testing.assert_array_equal(s.image, rgb)
        np.testing.assert_allclose(s.depth, gt.astype(np.float32) / 256.0, rtol=1e-6)
        assert s.depth.dtype == np.float32 and (s.depth == 0).mean() > 0.5
    s02, s03, s28, s_nocalib = ds[0], ds[1], ds[2], ds[3]
    assert (s02.camera.fx, s02.camera.fy, s02.camera.cx, s02.camera.cy) == pytest.approx((P2[0], P2[0], P2[1], P2[2]))
    assert (s03.camera.fx, s03.camera.cx, s03.camera.cy) == pytest.approx((P3[0], P3[1], P3[2]))     # image_03 -> P_rect_03
    assert s28.camera.fx == pytest.approx(P2[0] / 2) and s28.camera.cx == pytest.approx((P2[1] + 0.5) / 2 - 0.5)
    assert (s_nocalib.camera.fx, s_nocalib.camera.fy) == (721.5377, 721.5377)
    assert (s_nocalib.camera.cx, s_nocalib.camera.cy) == ((W - 1) / 2, (H - 1) / 2)
    assert s02.name == "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069"


def test_keep_missing_gives_invalid_depth(kitti) -> None:
    root, gt_root, split, frames = kitti
    lines = split.read_text().splitlines()[:-1]  # drop the line whose GT file is absent
    split.write_text("\n".join(lines) + "\n")
    ds = KittiDataset(root, gt_root, split, skip_missing=False)
    assert len(ds) == 5
    s = ds[2]
    np.testing.assert_array_equal(s.image, frames[2][2])
    assert not s.depth.any()


def test_bad_inputs(kitti, tmp_path: Path) -> None:
    root, gt_root, split, _ = kitti
    with pytest.raises(InputError, match="split file not found"):
        KittiDataset(root, gt_root, tmp_path / "nope.txt")
    with pytest.raises(InputError, match="not a folder"):
        KittiDataset(tmp_path / "nope", gt_root, split)
    bad = tmp_path / "bad.txt"
    bad.write_text("2011_09_26/x.png None\n")
    with pytest.raises(InputError, match="expected 'image_path gt_path|None focal'"):
        KittiDataset(root, gt_root, bad)
    bad.write_text("2011_09_26/x.png None 721\n")
    with pytest.raises(InputError, match="no frame with ground truth"):
        KittiDataset(root, gt_root, bad)
    # an 8-bit GT PNG is not KITTI depth
    _, gt_rel, _, _ = kitti[3][0]
    cv2.imwrite(str(gt_root / gt_rel), np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="uint16"):
        KittiDataset(root, gt_root, split)[0]
    (root / "2011_09_26" / "calib_cam_to_cam.txt").write_text("calib_time: x\nP_rect_02: 1 2 3\n")
    with pytest.raises(InputError, match="P_rect_03"):
        KittiDataset(root, gt_root, split)[1]
