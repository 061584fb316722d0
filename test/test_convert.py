"""sensor_msgs <-> numpy on real generated message classes, through the real CDR
serializer (rclpy.serialization), so what a subscriber would receive is what we check."""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.depth import to_millimetres
from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import pack_cloud, ray_table
from reflector_ros.ros import convert

H, W = 12, 16


@pytest.fixture
def header() -> Header:
    return Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id="cam_optical_frame")


def _wire(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def _image_msg(rgb: np.ndarray, encoding: str, pad: int = 0) -> Image:
    src = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    rows = np.zeros((H, W * 3 + pad), np.uint8)
    rows[:, : W * 3] = src.reshape(H, -1)
    msg = Image(height=H, width=W, encoding=encoding, is_bigendian=0, step=W * 3 + pad)
    msg.data = array.array("B", rows.tobytes())
    return msg


@pytest.mark.parametrize("encoding,pad", [("rgb8", 0), ("bgr8", 0), ("rgb8", 5)])
def test_rgb_from_image(encoding, pad):
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    msg = _wire(_image_msg(rgb, encoding, pad))
    np.testing.assert_array_equal(convert.rgb_from_image(msg), rgb)


def test_rgb_from_image_bad():
    msg = Image(height=H, width=W, encoding="rgb8", step=W * 3)
    msg.data = array.array("B", bytes(10))
    with pytest.raises(InputError):
        convert.rgb_from_image(msg)


def test_rgb_from_compressed():
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    ok, enc = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format="rgb8; png compressed bgr8")
    msg.data = array.array("B", enc.tobytes())
    np.testing.assert_array_equal(convert.rgb_from_compressed(_wire(msg)), rgb)


def _cal(msg: CameraInfo, width: int, height: int):
    """The one camera_info reader (core.camera_info), as the node, infer and bags use it."""
    from reflector_ros.core.camera_info import CameraInfoFields, read_calibration

    return read_calibration(CameraInfoFields.from_msg(msg), (width, height))[0]


def _intr(msg: CameraInfo, width: int, height: int) -> Intrinsics:
    """K of a camera_info at the image's size."""
    from reflector_ros.core.camera import intrinsics_from_k

    cal = _cal(msg, width, height)
    return intrinsics_from_k(cal.k, cal.width, cal.height)


def _info(k, width, height) -> CameraInfo:
    msg = CameraInfo(width=width, height=height)
    msg.k = [float(v) for v in k]
    return msg


def test_intrinsics_from_camera_info():
    k = [500.0, 0, 319.5, 0, 480.0, 239.5, 0, 0, 1]
    same = _intr(_info(k, 640, 480), 640, 480)
    assert same == Intrinsics(500.0, 480.0, 319.5, 239.5, 640, 480)
    half = _intr(_info(k, 640, 480), 320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == pytest.approx((250.0, 240.0, 159.5, 119.5))
    assert (half.width, half.height) == (320, 240)
    unsized = _intr(_info(k, 0, 0), 640, 480)
    assert unsized == same
    with pytest.raises(InputError, match="describes no camera"):
        _intr(CameraInfo(width=640, height=480), 640, 480)


def test_intrinsics_roi_and_binning():
    k = [500.0, 0, 319.5, 0, 480.0, 239.5, 0, 0, 1]
    info = _info(k, 640, 480)
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 40, 320, 240
    crop = _intr(info, 320, 240)
    assert crop == Intrinsics(500.0, 480.0, 219.5, 199.5, 320, 240)
    binned = _intr(info, 160, 120)      # roi then 2x2 binning
    assert (binned.fx, binned.cx) == pytest.approx((250.0, (219.5 + 0.5) / 2 - 0.5))
    full = _info(k, 640, 480)
    full.roi.width, full.roi.height = 640, 480                         # full-frame roi is a no-op
    assert _intr(full, 640, 480) == Intrinsics(500.0, 480.0, 319.5, 239.5, 640, 480)
    info.roi.x_offset = 400
    with pytest.raises(InputError, match="outside"):
        _intr(info, 320, 240)


def test_calibration_scales_and_crops_p_like_k():
    """P goes through the same resize and roi as K (P = [K | 0] stays so), D and R unchanged."""
    k = [500.0, 0, 319.5, 0, 480.0, 239.5, 0, 0, 1]
    info = _info(k, 640, 480)
    info.p = [450.0, 0, 330.0, 0, 0, 440.0, 230.0, 0, 0, 0, 1, 0]
    info.d = [-0.2, 0.05, 0.0, 0.0, 0.0]
    info.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    info.distortion_model = "plumb_bob"
    for roi in ((0, 0, 0, 0), (100, 40, 320, 240)):
        info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = roi
        cal = _cal(info, 160, 120)
        intr = _intr(info, 160, 120)
        assert (cal.k[0], cal.k[2], cal.k[4], cal.k[5]) == pytest.approx((intr.fx, intr.cx, intr.fy, intr.cy))
        pk = _info([450.0, 0, 330.0, 0, 440.0, 230.0, 0, 0, 1], 640, 480)
        pk.roi = info.roi
        want = _intr(pk, 160, 120)     # P's 3x3 as if it were a K
        assert (cal.p[0], cal.p[2], cal.p[5], cal.p[6]) == pytest.approx((want.fx, want.cx, want.fy, want.cy))
        assert cal.p[3] == 0.0 and cal.p[8:] == (0.0, 0.0, 1.0, 0.0)
        assert cal.d == tuple(info.d) and (cal.width, cal.height) == (160, 120)
    info.p = [1.0] * 9
    with pytest.raises(InputError, match="P must have 12"):
        _cal(info, 160, 120)


def test_depth_messages(header):
    depth = np.random.default_rng(2).uniform(0.2, 9, (H, W)).astype(np.float32)
    depth[0, 0] = np.nan
    msg = _wire(convert.depth_image_msg(header, depth))
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("32FC1", H, W, W * 4, 0)
    np.testing.assert_array_equal(np.frombuffer(msg.data, "<f4").reshape(H, W), depth)
    mm = _wire(convert.depth_image_msg(header, depth, "16UC1"))
    assert (mm.encoding, mm.step) == ("16UC1", W * 2)
    np.testing.assert_array_equal(np.frombuffer(mm.data, "<u2").reshape(H, W), to_millimetres(depth))
    assert np.frombuffer(mm.data, "<u2")[0] == 0
    with pytest.raises(InputError, match="32FC1 or 16UC1"):
        convert.depth_image_msg(header, depth, "mono16")


def test_confidence_and_colored(header):
    conf = np.random.default_rng(3).random((H, W)).astype(np.float32)
    msg = _wire(convert.confidence_msg(header, conf))
    assert msg.encoding == "32FC1"
    np.testing.assert_array_equal(np.frombuffer(msg.data, "<f4").reshape(H, W), conf)
    bgr = np.random.default_rng(4).integers(0, 256, (H, W, 3), dtype=np.uint8)
    col = _wire(convert.colored_msg(header, bgr))
    assert (col.encoding, col.step) == ("bgr8", W * 3)
    np.testing.assert_array_equal(np.frombuffer(col.data, np.uint8).reshape(H, W, 3), bgr)
    with pytest.raises(InputError):
        convert.colored_msg(header, bgr[..., :2])


def test_camera_info_msg(header):
    intr = Intrinsics(250.0, 240.0, 159.5, 119.5, 320, 240)
    msg = _wire(convert.camera_info_msg(header, intr))
    assert (msg.width, msg.height, msg.distortion_model) == (320, 240, "plumb_bob")
    np.testing.assert_array_equal(msg.k, [250, 0, 159.5, 0, 240, 119.5, 0, 0, 1])
    np.testing.assert_array_equal(msg.p, [250, 0, 159.5, 0, 0, 240, 119.5, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(msg.r, np.eye(3).ravel())
    assert list(msg.d) == [0.0] * 5
    # what a consumer reads back is the same camera
    assert _intr(msg, 320, 240) == intr


@pytest.mark.parametrize("with_rgb", [False, True])
def test_cloud_msg(header, with_rgb):
    intr = Intrinsics(20.0, 20.0, 7.5, 5.5, W, H)
    depth = np.random.default_rng(5).uniform(0.5, 5, (H, W)).astype(np.float32)
    rgb = np.random.default_rng(6).integers(0, 256, (H, W, 3), dtype=np.uint8)
    rays = ray_table(intr, 2)
    buf = pack_cloud(depth, rays, stride=2, rgb=rgb if with_rgb else None)
    h, w = buf.shape[:2]
    msg = _wire(convert.cloud_msg(header, buf, h, w, with_rgb))
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (h, w, 16, w * 16)
    assert msg.is_dense is False and msg.is_bigendian is False
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == (
        [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)] + ([("rgb", 12, 7, 1)] if with_rgb else []))
    assert bytes(msg.data) == buf.tobytes()
    pts = np.frombuffer(msg.data, "<f4").reshape(h, w, 4)
    u = np.arange(0, W, 2)
    np.testing.assert_allclose(pts[0, :, 0], (u - 7.5) * depth[0, ::2] / 20.0, rtol=1e-6)
    with pytest.raises(InputError):
        convert.cloud_msg(header, buf, h + 1, w, with_rgb)


def test_header_identity_on_every_output(header):
    depth = np.ones((H, W), np.float32)
    intr = Intrinsics(20.0, 20.0, 7.5, 5.5, W, H)
    buf = pack_cloud(depth, ray_table(intr))
    outs = [convert.depth_image_msg(header, depth), convert.depth_image_msg(header, depth, "16UC1"),
            convert.confidence_msg(header, depth), convert.colored_msg(header, np.zeros((H, W, 3), np.uint8)),
            convert.camera_info_msg(header, intr), convert.cloud_msg(header, buf, H, W, False)]
    for msg in outs:
        assert msg.header == header
        assert msg.header.stamp.sec == 1700000000 and msg.header.stamp.nanosec == 123456789
        assert msg.header.frame_id == "cam_optical_frame"
        assert _wire(msg).header == header


def test_message_array_goes_in_without_a_copy(header):
    """A message_array (or a full view of one) becomes msg.data itself; anything else is
    copied, so later writes to the caller's array never leak into a built message."""
    depth = convert.message_array((H, W), np.float32)
    depth[:] = 2.5
    msg = convert.depth_image_msg(header, depth)
    depth[0, 0] = 7.0                                  # shared: the node reuses it next frame
    assert np.frombuffer(msg.data, "<f4")[0] == 7.0
    assert np.allclose(np.frombuffer(_wire(msg).data, "<f4")[1:], 2.5)

    plain = np.full((H, W), 2.5, np.float32)
    msg2 = convert.depth_image_msg(header, plain)
    plain[0, 0] = 7.0
    assert np.frombuffer(msg2.data, "<f4")[0] == 2.5

    cloud = convert.message_array((H, W, 4), np.float32)
    buf = pack_cloud(np.ones((H, W), np.float32), ray_table(Intrinsics(20.0, 20.0, 7.5, 5.5, W, H)), out=cloud)
    cmsg = convert.cloud_msg(header, buf, H, W, False)
    assert np.shares_memory(np.frombuffer(cmsg.data, np.uint8), cloud)
    assert bytes(_wire(cmsg).data) == cloud.tobytes()

    part = convert.message_array((H, W), np.float32)[: H // 2]   # does not cover the field: copied
    msg3 = convert.depth_image_msg(header, part)
    assert len(msg3.data) == part.nbytes and not np.shares_memory(np.frombuffer(msg3.data, np.uint8), part)
