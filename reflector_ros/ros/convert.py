"""sensor_msgs <-> numpy, with no per-element Python on the hot path.

Assigning ``bytes`` or a list to a generated ``uint8[]`` field makes rclpy check every
element; we fill the field's own ``array.array('B')`` with ``frombytes`` from a
memoryview of the numpy buffer instead (one memcpy; bench/bench_core.py compares).
An array made by ``message_array`` already lives in such a field value and goes into
the message with no copy at all: the node packs its cloud and depth straight into one.
"""
from __future__ import annotations

import array
import sys
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from reflector_ros.core.camera import Intrinsics, k_matrix, p_matrix
from reflector_ros.core.decode import decode_compressed, decode_image
from reflector_ros.core.depth import to_millimetres
from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import POINT_STEP, cloud_fields

_BIGENDIAN = int(sys.byteorder == "big")


def message_array(shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
    """A zeroed C-contiguous array whose memory is a uint8[] field value.

    A message built from it (or from a full view of it) takes that field value without
    copying, so the caller must not write to it again until the message is published;
    rclpy serialises during ``publish()``, so reuse for the next frame is safe.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return np.frombuffer(array.array("B", bytes(nbytes)), dtype).reshape(shape)


def _owning_field(arr: np.ndarray) -> array.array | None:
    """The array.array('B') that arr covers exactly (a message_array or a full view of one)."""
    base: object = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if (isinstance(base, array.array) and base.typecode == "B" and arr.flags.c_contiguous
            and arr.nbytes == len(base) and arr.ctypes.data == base.buffer_info()[0]):
        return base
    return None


def _new(cls: type) -> Any:
    """An empty message that keeps an array.array assigned to its uint8[] field.

    Kilted's generated setters copy it (``array.array('B', value)``) unless the message
    was built with ``check_fields=True``; Humble's and Jazzy's keep it as is and have no
    such argument, so ask the class which kind it is.
    """
    return cls(check_fields=True) if "_check_fields" in getattr(cls, "__slots__", ()) else cls()


def _bytes_field(arr: np.ndarray) -> array.array:
    """A uint8[] field value holding arr's bytes: a message_array's own, else one copy."""
    own = _owning_field(arr)
    if own is not None:
        return own
    field = array.array("B")
    field.frombytes(np.ascontiguousarray(arr).data.cast("B"))
    return field


def rgb_from_image(msg: Image) -> np.ndarray:
    return decode_image(msg.data, msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian)


def rgb_from_compressed(msg: CompressedImage) -> np.ndarray:
    return decode_compressed(msg.data, msg.format)


def _image(header: Header, arr: np.ndarray, encoding: str, channels: int) -> Image:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != channels):
        raise InputError(f"{encoding} needs an (H, W{', ' + str(channels) if channels > 1 else ''}) array, "
                         f"got {arr.shape}")
    msg = _new(Image)
    msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = _BIGENDIAN
    msg.step = msg.width * channels * arr.dtype.itemsize
    msg.data = _bytes_field(arr)
    return msg


def depth_image_msg(header: Header, depth: np.ndarray, encoding: str = "32FC1") -> Image:
    """Metric depth (float32 metres, NaN invalid) as 32FC1 metres or 16UC1 millimetres (0 invalid)."""
    if encoding == "32FC1":
        return _image(header, depth.astype(np.float32, copy=False), encoding, 1)
    if encoding == "16UC1":
        return _image(header, to_millimetres(depth), encoding, 1)
    raise InputError(f"depth encoding must be 32FC1 or 16UC1 (REP 118), got '{encoding}'")


def confidence_msg(header: Header, conf: np.ndarray) -> Image:
    return _image(header, conf.astype(np.float32, copy=False), "32FC1", 1)


def colored_msg(header: Header, bgr: np.ndarray) -> Image:
    if bgr.dtype != np.uint8:
        raise InputError(f"colored image must be uint8 BGR, got {bgr.dtype}")
    return _image(header, bgr, "bgr8", 3)


def camera_info_msg(header: Header, intr: Intrinsics) -> CameraInfo:
    """CameraInfo of the depth image: K and P (depth_image_proc reads P), R identity, no distortion.

    D is zero because the depth lives in the pinhole model the network saw.
    """
    msg = CameraInfo()
    msg.header = header
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = "plumb_bob"
    msg.d = array.array("d", [0.0] * 5)
    msg.k = k_matrix(intr)
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = p_matrix(intr)
    return msg


def cloud_msg(header: Header, buffer: np.ndarray, height: int, width: int, with_rgb: bool) -> PointCloud2:
    """Organised PointCloud2 around pack_cloud()'s buffer (height x width x 16 bytes)."""
    if buffer.nbytes != height * width * POINT_STEP:
        raise InputError(f"cloud buffer has {buffer.nbytes} bytes, expected {height}x{width}x{POINT_STEP}")
    msg = _new(PointCloud2)
    msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in cloud_fields(with_rgb)]
    msg.is_bigendian = bool(_BIGENDIAN)
    msg.point_step = POINT_STEP
    msg.row_step = POINT_STEP * int(width)
    msg.is_dense = False
    msg.data = _bytes_field(buffer)
    return msg
