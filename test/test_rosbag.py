"""BagDataset / iter_bag_images on real rosbag2 files (sqlite3 and mcap) written here with rosbags."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from reflector_ros.core.errors import InputError
from reflector_ros.data.rosbag import BagDataset, bag_topic_types, iter_bag_images

TS = get_typestore(Stores.ROS2_HUMBLE)
H, W, N = 24, 32, 8
T0 = 1_700_000_000 * 10**9
PERIOD = 100_000_000          # 10 Hz colour
DEPTH_OFFSET = 5_000_000      # depth stamped 5 ms after colour: inside max_dt 0.02
LATE_FRAME = 3                # this frame's depth is 50 ms late: no match
K1 = (30.0, 31.0, 15.5, 11.5)
K2 = (33.0, 34.0, 16.0, 12.0)  # camera_info stamped with frame 5 at twice the resolution


def _header(stamp: int):
    Header = TS.types["std_msgs/msg/Header"]
    Time = TS.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam_optical_frame")


def _image(stamp: int, arr: np.ndarray, encoding: str):
    h, w = arr.shape[:2]
    data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    return TS.types["sensor_msgs/msg/Image"](header=_header(stamp), height=h, width=w, encoding=encoding,
                                             is_bigendian=0, step=data.size // h, data=data)


def _info(stamp: int, k: tuple[float, float, float, float], width: int, height: int):
    fx, fy, cx, cy = k
    Roi = TS.types["sensor_msgs/msg/RegionOfInterest"]
    return TS.types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0,
        roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def rgb_frame(i: int) -> np.ndarray:
    """Smooth but frame-specific colours (JPEG keeps them close)."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([(xx * 7 + i * 20) % 256, (yy * 9 + i * 5) % 256, np.full_like(xx, 40 + i * 10)], -1).astype(np.uint8)


def depth_mm(i: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    mm = (500 + i * 100 + xx * 10 + yy).astype(np.uint16)
    mm[0, 0] = 0  # invalid stays invalid
    return mm


def write_bag(path: Path, storage: StoragePlugin) -> Path:
    with Writer(path, version=9, storage_plugin=storage) as bag:
        c_rgb = bag.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=TS)
        c_jpg = bag.add_connection("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", typestore=TS)
        c_d16 = bag.add_connection("/cam/depth16", "sensor_msgs/msg/Image", typestore=TS)
        c_d32 = bag.add_connection("/cam/depth32", "sensor_msgs/msg/Image", typestore=TS)
        c_info = bag.add_connection("/cam/info", "sensor_msgs/msg/CameraInfo", typestore=TS)
        c_cd = bag.add_connection("/cam/depth16/compressedDepth", "sensor_msgs/msg/CompressedImage", typestore=TS)
        records = []
        for i in range(N):
            t = T0 + i * PERIOD
            rgb = rgb_frame(i)
            records.append((t + 1_000_000, c_rgb, _image(t, rgb, "rgb8")))
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
            assert ok
            records.append((t + 1_000_000, c_jpg, TS.types["sensor_msgs/msg/CompressedImage"](
                header=_header(t), format="jpeg", data=jpg.reshape(-1))))
            td = t + (50_000_000 if i == LATE_FRAME else DEPTH_OFFSET)
            mm = depth_mm(i)
            metres = mm.astype(np.float32) / 1000
            metres[0, 0] = np.nan
            metres[0, 1] = np.inf
            records.append((td + 2_000_000, c_d16, _image(td, mm, "16UC1")))
            records.append((td + 2_000_000, c_d32, _image(td, metres, "32FC1")))
            ok, png = cv2.imencode(".png", mm)   # compressed_depth_image_transport: 12-byte header + PNG
            records.append((td + 2_000_000, c_cd, TS.types["sensor_msgs/msg/CompressedImage"](
                header=_header(td), format="16UC1; compressedDepth png",
                data=np.frombuffer(struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes(), np.uint8))))
        # first info arrives after frame 0 (stamped with frame 1); frame 5 brings a new calibration
        records.append((T0 + PERIOD + 3_000_000, c_info, _info(T0 + PERIOD, K1, W, H)))
        records.append((T0 + 5 * PERIOD + 3_000_000, c_info, _info(T0 + 5 * PERIOD, K2, 2 * W, 2 * H)))
        for log, conn, msg in sorted(records, key=lambda r: r[0]):
            bag.write(conn, log, TS.serialize_cdr(msg, conn.msgtype))
    return path


@pytest.fixture(scope="module", params=[StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"])
def bag_path(request, tmp_path_factory) -> Path:
    return write_bag(tmp_path_factory.mktemp("bags") / f"bag_{request.param.name.lower()}", request.param)


def _scaled_k2() -> tuple[float, float, float, float]:
    fx, fy, cx, cy = K2
    return fx / 2, fy / 2, (cx + 0.5) / 2 - 0.5, (cy + 0.5) / 2 - 0.5


def _k(fields) -> np.ndarray:
    """(fx, fy, cx, cy) of iter_bag_images' camera_info read at the image's size (K)."""
    from reflector_ros.core.camera_info import read_calibration

    assert fields is not None
    cal = read_calibration(fields, (W, H))[0]
    return np.asarray([cal.k[0], cal.k[4], cal.k[2], cal.k[5]])


def _expected_k(frame: int) -> tuple[float, float, float, float]:
    return _scaled_k2() if frame >= 5 else K1  # frames 0 (nearest after) .. 4 use K1


def test_storage_really_differs(bag_path: Path) -> None:
    files = sorted(p.suffix for p in bag_path.iterdir())
    assert ".yaml" in files and (".db3" in files or ".mcap" in files)


def test_rgb8_and_16uc1_values_matching_and_intrinsics(bag_path: Path) -> None:
    ds = BagDataset(bag_path, "/cam/image", "/cam/depth16", "/cam/info")
    frames = [i for i in range(N) if i != LATE_FRAME]
    assert len(ds) == len(frames) and ds.unmatched == 1
    for j, i in enumerate(frames):
        s = ds[j]
        assert ds.stamp_ns(j) == T0 + i * PERIOD
        np.testing.assert_array_equal(s.image, rgb_frame(i))
        assert s.depth.dtype == np.float32
        np.testing.assert_allclose(s.depth, depth_mm(i) / 1000.0, rtol=1e-6)
        assert s.depth[0, 0] == 0.0
        np.testing.assert_allclose((s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy), _expected_k(i))
    assert ds[-1].name.endswith(str(T0 + (N - 1) * PERIOD))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_32fc1_nan_inf_become_zero(bag_path: Path) -> None:
    ds = BagDataset(bag_path, "/cam/image", "/cam/depth32", "/cam/info")
    s = ds[2]
    expect = depth_mm(2) / 1000.0
    expect[0, 0] = expect[0, 1] = 0.0
    np.testing.assert_allclose(s.depth, expect, rtol=1e-6)
    assert np.isfinite(s.depth).all()


def test_compressed_depth_topic_gives_the_raw_depth(bag_path: Path) -> None:
    """Robots often record depth through compressed_depth_image_transport: the same frames
    and the same metres as the raw 16UC1 topic."""
    raw = BagDataset(bag_path, "/cam/image", "/cam/depth16", "/cam/info")
    packed = BagDataset(bag_path, "/cam/image", "/cam/depth16/compressedDepth", "/cam/info")
    assert len(packed) == len(raw) == N - 1
    for i in (0, 4):
        np.testing.assert_array_equal(packed[i].depth, raw[i].depth)


def test_max_dt_controls_matching(bag_path: Path) -> None:
    assert len(BagDataset(bag_path, "/cam/image", "/cam/depth16", "/cam/info", max_dt=0.1)) == N
    with pytest.raises(InputError, match="within"):
        BagDataset(bag_path, "/cam/image", "/cam/depth16", "/cam/info", max_dt=0.001)


def test_compressed_jpeg_and_no_depth(bag_path: Path) -> None:
    ds = BagDataset(bag_path, "/cam/image/compressed", camera_info_topic="/cam/info")
    assert len(ds) == N
    s = ds[6]
    assert s.image.shape == (H, W, 3)
    assert np.abs(s.image.astype(int) - rgb_frame(6).astype(int)).mean() < 6
    assert not s.depth.any()  # no depth topic: all invalid


def test_pickled_dataset_reopens_the_bag(bag_path: Path) -> None:
    ds = BagDataset(bag_path, "/cam/image", "/cam/depth16", "/cam/info")
    _ = ds[0]  # opens a reader in this process
    copy = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(copy[1].image, ds[1].image)


def test_iter_bag_images(bag_path: Path) -> None:
    out = list(iter_bag_images(bag_path, "/cam/image", "/cam/info"))
    assert [t for t, _, _ in out] == [T0 + i * PERIOD for i in range(N)]
    # frames 0 and 1 come before the first camera_info and wait for it
    np.testing.assert_allclose(_k(out[0][2]), K1)
    np.testing.assert_allclose(_k(out[1][2]), K1)
    np.testing.assert_allclose(_k(out[4][2]), K1)
    np.testing.assert_allclose(_k(out[7][2]), _scaled_k2())
    np.testing.assert_array_equal(out[4][1], rgb_frame(4))
    assert all(intr is None for _, _, intr in iter_bag_images(bag_path, "/cam/image"))
    # with no room to wait, frames before the first info have no intrinsics
    early = list(iter_bag_images(bag_path, "/cam/image", "/cam/info", max_pending=0))
    assert [t for t, _, _ in early] == [t for t, _, _ in out]
    assert early[0][2] is None and early[1][2] is None
    np.testing.assert_allclose(_k(early[2][2]), K1)


def test_missing_topic_lists_topics(bag_path: Path) -> None:
    with pytest.raises(InputError, match=r"/cam/nope.*topics present:.*/cam/depth16 \(sensor_msgs/msg/Image\)"):
        BagDataset(bag_path, "/cam/nope", camera_info_topic="/cam/info")
    with pytest.raises(InputError, match="CameraInfo"):
        BagDataset(bag_path, "/cam/info", camera_info_topic="/cam/info")
    with pytest.raises(InputError, match="topics present"):
        next(iter_bag_images(bag_path, "/cam/image", "/cam/missing_info"))


def test_needs_intrinsics_source(bag_path: Path) -> None:
    with pytest.raises(InputError, match="camera_info_topic or intrinsics"):
        BagDataset(bag_path, "/cam/image")
    s = BagDataset(bag_path, "/cam/image", intrinsics=(10.0, 11.0, 12.0, 13.0))[0]
    assert (s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy) == (10.0, 11.0, 12.0, 13.0)


def test_missing_and_corrupt_bags(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        BagDataset(tmp_path / "nothing", "/cam/image", intrinsics=(1, 1, 1, 1))
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "metadata.yaml").write_text("rosbag2_bagfile_information: [this is not a bag\n")
    with pytest.raises(InputError, match="cannot read ROS 2 bag"):
        BagDataset(bad_dir, "/cam/image", intrinsics=(1, 1, 1, 1))
    for suffix in (".db3", ".mcap"):
        junk = tmp_path / f"junk{suffix}"
        junk.write_bytes(b"\x00garbage" * 100)
        with pytest.raises(InputError, match="cannot read ROS 2 bag"):
            BagDataset(junk, "/cam/image", intrinsics=(1, 1, 1, 1))
        with pytest.raises(InputError, match="cannot read ROS 2 bag"):
            next(iter_bag_images(junk, "/cam/image"))


def test_truncated_storage_file(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "cut", StoragePlugin.MCAP)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read ROS 2 bag"):
        BagDataset(bag, "/cam/image", "/cam/depth16", "/cam/info")


def test_storage_file_opened_directly(bag_path: Path) -> None:
    """`reflector infer x.mcap` / `x.db3`: the storage file without its folder's metadata.yaml."""
    storage = next(p for p in bag_path.iterdir() if p.suffix in (".db3", ".mcap"))
    ds = BagDataset(storage, "/cam/image", "/cam/depth16", "/cam/info")
    assert len(ds) == N - 1
    np.testing.assert_array_equal(ds[4].image, rgb_frame(5))
    assert len(list(iter_bag_images(storage, "/cam/image"))) == N


def test_unstamped_driver_falls_back_to_receive_time(tmp_path: Path) -> None:
    with Writer(tmp_path / "zero", version=9, storage_plugin=StoragePlugin.SQLITE3) as bag:
        c_rgb = bag.add_connection("/img", "sensor_msgs/msg/Image", typestore=TS)
        c_d = bag.add_connection("/depth", "sensor_msgs/msg/Image", typestore=TS)
        for i in range(3):
            t = T0 + i * PERIOD
            bag.write(c_rgb, t, TS.serialize_cdr(_image(0, rgb_frame(i), "rgb8"), c_rgb.msgtype))
            bag.write(c_d, t + 4_000_000, TS.serialize_cdr(_image(0, depth_mm(i), "16UC1"), c_d.msgtype))
    ds = BagDataset(tmp_path / "zero", "/img", "/depth", intrinsics=(30.0, 30.0, 15.5, 11.5))
    assert [ds.stamp_ns(i) for i in range(3)] == [T0 + i * PERIOD for i in range(3)]
    np.testing.assert_allclose(ds[1].depth, depth_mm(1) / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(ds[2].image, rgb_frame(2))


def test_bag_topic_types(bag_path: Path) -> None:
    assert bag_topic_types(bag_path) == {
        "/cam/image": "sensor_msgs/msg/Image", "/cam/image/compressed": "sensor_msgs/msg/CompressedImage",
        "/cam/depth16": "sensor_msgs/msg/Image", "/cam/depth32": "sensor_msgs/msg/Image",
        "/cam/info": "sensor_msgs/msg/CameraInfo",
        "/cam/depth16/compressedDepth": "sensor_msgs/msg/CompressedImage"}


def test_raw_camera_bag_is_rectified_for_training(tmp_path: Path) -> None:
    """Colour and depth of a camera with distortion land in P's camera together, as the node
    will feed it; rectify=false leaves both as recorded. Depth values are labels of their
    raw pixel, so a depth pixel that came from the wrong place is caught."""
    h, w, f = 48, 64, 50.0
    k = np.array([f, 0, 31.5, 0, f, 23.5, 0, 0, 1.0])
    d = np.array([-0.25, 0.06, 0.001, -0.001, 0.0])
    p = np.array([0.85 * f, 0, 33.0, 0, 0, 0.85 * f, 22.0, 0, 0, 0, 1.0, 0])
    yy, xx = np.mgrid[0:h, 0:w]
    label_mm = (1000 + yy * w + xx).astype(np.uint16)            # depth names its own raw pixel
    rgb = np.stack([yy * 5, xx * 4, np.full_like(xx, 90)], -1).astype(np.uint8)
    Roi = TS.types["sensor_msgs/msg/RegionOfInterest"]
    info = TS.types["sensor_msgs/msg/CameraInfo"](
        header=_header(T0), height=h, width=w, distortion_model="plumb_bob", d=d, k=k, r=np.eye(3).reshape(-1),
        p=p, binning_x=0, binning_y=0, roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    def write(path: Path) -> Path:
        with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as bag:
            c_rgb = bag.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=TS)
            c_dep = bag.add_connection("/cam/depth", "sensor_msgs/msg/Image", typestore=TS)
            c_inf = bag.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TS)
            bag.write(c_inf, T0, TS.serialize_cdr(info, c_inf.msgtype))
            bag.write(c_rgb, T0 + 1, TS.serialize_cdr(_image(T0, rgb, "rgb8"), c_rgb.msgtype))
            bag.write(c_dep, T0 + 2, TS.serialize_cdr(_image(T0, label_mm, "16UC1"), c_dep.msgtype))
        return path

    path = write(tmp_path / "raw_cam")

    s = BagDataset(path, "/cam/image_raw", "/cam/depth", "/cam/camera_info")[0]
    assert (s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy) == pytest.approx((0.85 * f, 0.85 * f, 33.0, 22.0))   # P, not K
    mx, my = cv2.initUndistortRectifyMap(k.reshape(3, 3), d, None, p.reshape(3, 4)[:, :3], (w, h), cv2.CV_32FC1)
    valid = s.depth > 0
    assert 0.5 < valid.mean() < 1.0                       # the corners the lens never saw are invalid
    idx = np.rint(s.depth[valid] * 1000).astype(int) - 1000
    src_y, src_x = idx // w, idx % w
    # nearest raw pixel (maps hold 1/32 px): a depth from a neighbouring pixel is off by more
    assert np.abs(src_x - mx[valid]).max() <= 0.53 and np.abs(src_y - my[valid]).max() <= 0.53
    want = cv2.remap(rgb, mx, my, cv2.INTER_LINEAR)
    inner = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.abs(s.image.astype(int) - want.astype(int))[inner].max() <= 3

    # only P filled in (K zeros), as some drivers publish on image_rect: P's camera, said once, as the node does
    info.k = np.zeros(9)
    p_only = BagDataset(write(tmp_path / "p_only"), "/cam/image_raw", "/cam/depth", "/cam/camera_info")
    with pytest.warns(UserWarning, match="no K but a valid P"):
        sp = p_only[0]
    assert (sp.camera.fx, sp.camera.cx, sp.camera.cy) == pytest.approx((0.85 * f, 33.0, 22.0))
    np.testing.assert_array_equal(sp.image, rgb)          # taken as rectified already: not remapped
    info.k = k

    plain = BagDataset(path, "/cam/image_raw", "/cam/depth", "/cam/camera_info", rectify=False)[0]
    np.testing.assert_array_equal(plain.image, rgb)
    np.testing.assert_allclose(plain.depth, label_mm / 1000.0, rtol=1e-6)
    again = pickle.loads(pickle.dumps(BagDataset(path, "/cam/image_raw", "/cam/depth", "/cam/camera_info")))
    np.testing.assert_array_equal(again[0].depth, s.depth)

    # a lens model OpenCV cannot undo: one warning, and the frames as recorded with K (as the node)
    info.distortion_model, info.d = "kannala_brandt_8", np.full(8, 0.1)
    odd = BagDataset(write(tmp_path / "odd_lens"), "/cam/image_raw", "/cam/depth", "/cam/camera_info")
    with pytest.warns(UserWarning, match="kannala_brandt_8"):
        s2 = odd[0]
    assert (s2.camera.fx, s2.camera.fy, s2.camera.cx, s2.camera.cy) == (f, f, 31.5, 23.5)
    np.testing.assert_array_equal(s2.image, rgb)
    np.testing.assert_allclose(s2.depth, label_mm / 1000.0, rtol=1e-6)
