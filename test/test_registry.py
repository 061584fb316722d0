"""open_dataset specs against real files of every type (written here), plus the real hololens manifest."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin
from test_kitti import calib_text, write_frame
from test_nyu import frames as nyu_frames
from test_nyu import write_mat73, write_sync
from test_rosbag import LATE_FRAME, N as BAG_FRAMES, depth_mm, write_bag

from reflector_ros.core.errors import InputError
from reflector_ros.data.manifest import frame_range
from reflector_ros.data.registry import DATASET_DEFAULTS, dataset_defaults, open_dataset, parse_spec


def write_manifest_dir(root: Path, n: int) -> list[np.ndarray]:
    """The documented manifest folder format, by hand (rgb PNG, depth uint16 mm)."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    frames, rgbs = [], []
    for i in range(n):
        rgb = np.full((8, 12, 3), (i * 10, 50, 200 - i), np.uint8)
        cv2.imwrite(str(root / "rgb" / f"{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "depth" / f"{i:04d}.png"), np.full((8, 12), 1000 + i, np.uint16))
        frames.append({"rgb": f"rgb/{i:04d}.png", "depth": f"depth/{i:04d}.png", "fx": 10.0, "fy": 10.0,
                       "cx": 5.5, "cy": 3.5, "width": 12, "height": 8, "depth_scale": 1000.0, "max_depth": 10.0})
        rgbs.append(rgb)
    (root / "manifest.json").write_text(json.dumps({"name": "tiny", "frames": frames}))
    return rgbs


def test_parse_spec_forms() -> None:
    cfg = parse_spec("kitti:/data/raw?gt=/data/gt&split=/s.txt&frames=0:10")
    assert cfg == {"type": "kitti", "path": "/data/raw", "gt": "/data/gt", "split": "/s.txt", "frames": "0:10"}
    assert parse_spec({"type": "bag", "path": "x", "image": "/a"})["image"] == "/a"
    with pytest.raises(InputError, match="known types: bag, kitti, manifest, nyu_mat, nyu_sync, synthetic"):
        parse_spec("imagenet:/x")
    with pytest.raises(InputError, match="known types"):
        parse_spec({"path": "/x"})
    with pytest.raises(InputError, match="no type"):
        parse_spec("/just/a/path")
    with pytest.raises(InputError, match=r"does not take \['splitt'\]"):
        parse_spec("nyu_mat:/f.mat?splitt=/s.txt")
    with pytest.raises(InputError, match="no path"):
        parse_spec("manifest:")


def test_defaults_for_evaluation() -> None:
    assert dataset_defaults("nyu_mat:/x.mat") == {"crop": "eigen", "max_depth": 10.0}
    assert dataset_defaults({"type": "kitti", "path": "/x"}) == {"crop": "garg", "max_depth": 80.0}
    assert dataset_defaults("manifest:/x")["max_depth"] == 10.0 and dataset_defaults("manifest:/x")["crop"] is None
    assert set(DATASET_DEFAULTS) == {"synthetic", "manifest", "nyu_mat", "nyu_sync", "kitti", "bag"}


def test_frame_range() -> None:
    assert frame_range("250:373", 373) == range(250, 373)
    assert frame_range(":3", 10) == range(0, 3) and frame_range("0:10:5", 10) == range(0, 10, 5)
    assert frame_range("-1", 10) == range(9, 10)
    assert frame_range("0:10", 10) == range(10) and frame_range("-3:", 10) == range(7, 10)
    assert frame_range("9:0:-3", 10) == range(9, 0, -3)
    for bad in ("a:b", "5:5", "0:4:0", "1:2:3:4", "20", "8:12", "11:", ":-11", "", "10:0:-1"):
        with pytest.raises(InputError):
            frame_range(bad, 10)
    # past the end is an error, not 2 frames quietly in place of 4
    with pytest.raises(InputError, match="'8:12': 12 is out of range for 10 frames"):
        frame_range("8:12", 10)


def test_manifest_and_synthetic(tmp_path: Path) -> None:
    rgbs = write_manifest_dir(tmp_path / "m", 6)
    ds = open_dataset(f"manifest:{tmp_path / 'm'}?frames=2:5")
    assert len(ds) == 3
    np.testing.assert_array_equal(ds[0].image, rgbs[2])
    assert ds[2].depth[0, 0] == pytest.approx(1.004)
    assert len(open_dataset({"type": "synthetic", "path": str(tmp_path / "m")})) == 6


def test_nyu_specs(tmp_path: Path) -> None:
    images, depths = nyu_frames()
    mat = write_mat73(tmp_path / "nyu.mat", images, depths)
    (tmp_path / "test.txt").write_text("1\n3\n4\n")
    ds = open_dataset(f"nyu_mat:{mat}?split={tmp_path / 'test.txt'}&frames=1:")
    assert len(ds) == 2
    np.testing.assert_array_equal(ds[0].image, images[2])
    np.testing.assert_array_equal(ds[-1].depth, depths[3])
    sync = tmp_path / "sync"
    split, _, mms = write_sync(sync)
    ds = open_dataset({"type": "nyu_sync", "path": str(sync), "split": str(split)})
    np.testing.assert_allclose(ds[0].depth, mms[0] / 1000.0, rtol=1e-6)
    with pytest.raises(InputError, match="needs split"):
        open_dataset(f"nyu_sync:{sync}")


def test_kitti_spec(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root, gt_root = tmp_path / "raw", tmp_path / "gt"
    (root / "2011_09_26").mkdir(parents=True)
    (root / "2011_09_26" / "calib_cam_to_cam.txt").write_text(calib_text((40, 12)))
    img, gt_rel, rgb, gt = write_frame(root, gt_root, "2011_09_26", "2011_09_26_drive_0002_sync", "02", 1, True, rng)
    img2, _, _, _ = write_frame(root, gt_root, "2011_09_26", "2011_09_26_drive_0002_sync", "02", 2, False, rng)
    split = tmp_path / "split.txt"
    split.write_text(f"{img} {gt_rel} 721.5377\n{img2} None 721.5377\n")
    ds = open_dataset(f"kitti:{root}?gt={gt_root}&split={split}")
    assert len(ds) == 1
    assert gt is not None
    np.testing.assert_allclose(ds[0].depth, gt / 256.0, rtol=1e-6)
    assert len(open_dataset(f"kitti:{root}?gt={gt_root}&split={split}&skip_missing=false")) == 2
    with pytest.raises(InputError, match="needs gt"):
        open_dataset(f"kitti:{root}?split={split}")
    with pytest.raises(InputError, match="true/false"):
        open_dataset(f"kitti:{root}?gt={gt_root}&split={split}&skip_missing=maybe")


def test_bag_spec(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP)
    ds = open_dataset(f"bag:{bag}?image=/cam/image&depth=/cam/depth16&info=/cam/info&frames=0:3")
    assert len(ds) == 3
    np.testing.assert_allclose(ds[2].depth, depth_mm(2) / 1000.0, rtol=1e-6)
    full = open_dataset({"type": "bag", "path": str(bag), "image": "/cam/image", "depth": "/cam/depth16",
                         "info": "/cam/info", "max_dt": 0.1})
    assert len(full) == BAG_FRAMES  # the late depth frame (LATE_FRAME) matches with a wider window
    assert LATE_FRAME < BAG_FRAMES
    ds = open_dataset(f"bag:{bag}?image=/cam/image&intrinsics=1,2,3,4")
    assert (ds[0].camera.fx, ds[0].camera.cy) == (1.0, 4.0)
    with pytest.raises(InputError, match="needs image=TOPIC"):
        open_dataset(f"bag:{bag}?depth=/cam/depth16")
    with pytest.raises(InputError, match="fx,fy,cx,cy"):
        open_dataset(f"bag:{bag}?image=/cam/image&intrinsics=1,2")
    with pytest.raises(InputError, match="not found"):
        open_dataset(f"bag:{tmp_path / 'none'}?image=/cam/image&intrinsics=1,2,3,4")
    with pytest.raises(InputError, match="not found"):                 # before asking for info=
        open_dataset(f"bag:{tmp_path / 'none'}?image=/cam/image")
    with pytest.raises(InputError, match="needs info=CAMERA_INFO_TOPIC or intrinsics"):
        open_dataset(f"bag:{bag}?image=/cam/image&depth=/cam/depth16")


def test_real_hololens_manifest(hololens_dir: Path) -> None:
    ds = open_dataset(f"manifest:{hololens_dir}?frames=250:373")
    assert len(ds) == 123
    s = ds[0]
    assert s.image.shape == (360, 540, 3)
    assert (s.camera.fx, s.camera.cy) == pytest.approx((495.57, 169.19), abs=0.01)
    assert 0.5 <= (s.depth > 0).mean() <= 0.78
