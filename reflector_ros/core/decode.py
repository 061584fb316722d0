"""Camera frames (raw sensor_msgs/Image fields or compressed payloads) to RGB uint8.

Everything is read zero-copy from the message buffer with ``np.frombuffer``; sizes are
checked against the header before anything is allocated, so a malformed or hostile
message costs a few microseconds and an ``InputError``, never a MemoryError.
"""
from __future__ import annotations

import array
import struct
from typing import Union

import cv2
import numpy as np

from reflector_ros.core.errors import InputError
from reflector_ros.core.limits import MAX_PIXELS, MAX_SIDE

# Compressed frames expand ~10-100x on decode; cap the decoded size separately so a
# 16000x16000 JPEG of a few kB cannot claim gigabytes.

Buffer = Union[bytes, bytearray, memoryview, array.array, np.ndarray]

# encoding -> (bytes per pixel, cv2 conversion to RGB or None when already RGB)
_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),       # ROS alias of UYVY (image_encodings.hpp)
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUY2),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUY2),  # ROS alias of YUYV
    # Raw sensor mosaics (machine-vision drivers publish these by default). OpenCV names a
    # pattern by the second row's 2nd and 3rd pixels, so ROS's rggb is OpenCV's BG, etc.
    "bayer_rggb8": (1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, cv2.COLOR_BayerGB2RGB),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
_YUV422 = ("uyvy", "yuv422", "yuyv", "yuv422_yuy2")
_SIXTEEN_BIT = ("mono16", "rgb16", "bgr16", "rgba16", "bgra16", "16uc1", "16uc3", "16sc1",
                "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16")


def _as_bytes(data: Buffer) -> np.ndarray:
    """A flat uint8 view of any buffer rclpy or a caller may hand us (no copy)."""
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise InputError(f"image data of type {type(data).__name__} is not a byte buffer: {exc}") from None


def _check_dims(width: int, height: int, what: str = "image") -> None:
    for name, val in (("width", width), ("height", height)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool):
            raise InputError(f"{what} {name} must be an integer, got {val!r}")
        if val <= 0:
            raise InputError(f"{what} {name} is {val}: an empty image carries nothing to process")
        if val > MAX_SIDE:
            raise InputError(f"{what} {name} {val} is absurd (limit {MAX_SIDE} pixels); refusing it")


def _not_colour(what: str) -> InputError:
    """The one refusal of wide (16/32-bit) or depth data, raw or compressed."""
    return InputError(f"{what} is a 16/32-bit or depth encoding, not camera colour input; the depth "
                      f"network needs an 8-bit colour image ({', '.join(SUPPORTED_ENCODINGS)})")


def _is_wide(encoding: str) -> bool:
    low = encoding.strip().lower()
    return low in _SIXTEEN_BIT or low.startswith(("16", "32", "64"))


def _unsupported(encoding: str, is_bigendian: int) -> InputError:
    if _is_wide(encoding):
        endian = " (and big-endian as well)" if is_bigendian else ""
        return _not_colour(f"encoding '{encoding}'{endian}")
    return InputError(f"unsupported image encoding '{encoding}'; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def decode_image(data: Buffer, encoding: str, width: int, height: int, step: int,
                 is_bigendian: int = 0) -> np.ndarray:
    """sensor_msgs/Image fields -> (H, W, 3) uint8 RGB.

    For rgb8 the result is a (possibly read-only, row-strided) view of ``data``: no copy
    at all. Every other encoding makes exactly one new array (the cv2 conversion).
    """
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise _unsupported(str(encoding), is_bigendian)
    bpp, code = spec
    _check_dims(width, height)
    if encoding in _YUV422 and width % 2:
        raise InputError(f"{encoding} packs two pixels per 4 bytes; width {width} must be even")
    row = width * bpp
    if not isinstance(step, (int, np.integer)) or step < row:
        raise InputError(f"step {step} is shorter than one row of {width} {encoding} pixels ({row} bytes)")
    width, height, step = int(width), int(height), int(step)   # numpy ints could overflow step*height
    buf = _as_bytes(data)
    if buf.size < step * height:
        raise InputError(f"image data has {buf.size} bytes, expected step x height = {step} x {height} "
                         f"= {step * height}")
    rows = buf[: step * height].reshape(height, step)[:, :row]
    img = rows.reshape(height, width, bpp) if bpp > 1 else rows
    if code is None:
        return img
    return cv2.cvtColor(img, code)


def image_size_from_header(buf: np.ndarray) -> tuple[str, int, int]:
    """(kind, width, height) from a PNG IHDR or JPEG SOF header (flat uint8), without decoding."""
    head = bytes(buf[:24])
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise InputError("corrupt PNG: missing IHDR header")
        width, height = struct.unpack(">II", head[16:24])
        return "png", width, height
    if head[:2] == b"\xff\xd8":
        width, height = _jpeg_size(buf.data)
        return "jpeg", width, height
    raise InputError("compressed image is neither PNG nor JPEG (unknown magic bytes); "
                     "supported compressed formats: jpeg, png")


def _jpeg_size(mv: memoryview) -> tuple[int, int]:
    """Walk JPEG marker segments up to the first SOFn and read its height/width."""
    i, n = 2, len(mv)
    while i + 4 <= n:
        if mv[i] != 0xFF:
            raise InputError("corrupt JPEG: expected a marker, found stray data before the frame header")
        marker = mv[i + 1]
        if marker == 0xFF:          # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD8:   # standalone markers, no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI / start of scan before any frame header
            break
        length = (mv[i + 2] << 8) | mv[i + 3]
        if length < 2:
            raise InputError("corrupt JPEG: segment length < 2")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            height = (mv[i + 5] << 8) | mv[i + 6]
            width = (mv[i + 7] << 8) | mv[i + 8]
            return width, height
        i += 2 + length
    raise InputError("corrupt JPEG: no frame header (SOF) found")


def _decoded_kind(img: np.ndarray) -> str:
    channels = 1 if img.ndim == 2 else img.shape[2]
    what = {1: "grey", 2: "grey+alpha", 3: "colour", 4: "colour+alpha"}.get(channels, f"{channels}-channel")
    return f"{img.dtype.itemsize * 8}-bit {what} ({img.dtype}, {channels} channel{'s' * (channels != 1)})"


def decode_compressed(data: Buffer, fmt: str = "") -> np.ndarray:
    """sensor_msgs/CompressedImage payload -> (H, W, 3) uint8 RGB.

    ``fmt`` is the message's format string ("jpeg", "png", "rgb8; jpeg compressed bgr8",
    ...). The payload is a standard JPEG/PNG (image_transport stores colour in bgr
    order), so the magic bytes decide the codec. Only 8-bit colour or grey passes, as on
    the raw topic, judged twice: by the original encoding the format string names (a
    mono16 stream sent as JPEG was cut to 8 bits on the way: 12-bit values come out near
    black), and by the decoded array itself (a 16-bit PNG, whatever the format says).
    Pixels are read as stored (no EXIF rotation), as drivers and calibrations use them.
    A one-channel payload whose format names a Bayer encoding ("bayer_rggb8; png compressed ",
    as compressed_image_transport writes a raw mosaic) is demosaiced like the raw topic's.
    """
    low_fmt = (fmt or "").lower()
    if "compresseddepth" in low_fmt.replace(" ", ""):
        raise InputError(f"compressed format '{fmt}' is a compressed depth image, not camera colour input")
    buf = _as_bytes(data)
    if buf.size < 8:
        raise InputError(f"compressed image of {buf.size} bytes is too short to be a JPEG or PNG")
    kind, width, height = image_size_from_header(buf)
    _check_dims(width, height, f"{kind} header")
    if width * height > MAX_PIXELS:
        raise InputError(f"{kind} header says {width}x{height}: over the {MAX_PIXELS} pixel limit; refusing it")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)   # as stored: depth, channels, orientation
    except cv2.error as exc:
        raise InputError(f"corrupt {kind} payload: {exc}") from None
    if img is None or img.size == 0:
        raise InputError(f"corrupt {kind} payload ({buf.size} bytes): OpenCV could not decode it")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype != np.uint8 or channels not in (1, 3, 4):
        raise _not_colour(f"compressed {kind} (format '{fmt}') holding {_decoded_kind(img)} pixels")
    original = low_fmt.split(";", 1)[0].strip() if ";" in low_fmt else ""
    if _is_wide(original):
        raise _not_colour(f"compressed {kind} (format '{fmt}') of encoding '{original}', cut to 8 bits on the way,")
    if original.startswith("bayer_") and channels == 1:
        # image_transport compresses a Bayer mosaic as it is, one channel, and names the
        # pattern before the ';': demosaic it as the raw topic would, not show it as grey
        if original not in _ENCODINGS:
            raise InputError(f"compressed {kind} (format '{fmt}'): unsupported Bayer pattern '{original}'; "
                             f"supported: {', '.join(e for e in SUPPORTED_ENCODINGS if e.startswith('bayer_'))}")
        return cv2.cvtColor(img, _ENCODINGS[original][1])
    code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}[channels]
    return cv2.cvtColor(img, code)


COMPRESSED_DEPTH_HEADER = 12   # compressed_depth_image_transport's ConfigHeader: int32 format, float32 quant A, B


def decode_compressed_depth(data: Buffer, fmt: str) -> np.ndarray:
    """A ``compressedDepth`` CompressedImage (compressed_depth_image_transport) -> (H, W)
    float32 metres, 0 invalid (as ``rosbag.decode_depth`` gives for raw depth).

    The payload is a 12-byte ConfigHeader (compression format, depthQuantA, depthQuantB)
    and a 16-bit PNG. ``fmt`` names the original encoding: "16UC1; compressedDepth png"
    stores millimetres as they are; "32FC1; compressedDepth png" stores quantised inverse
    depth q = A / z + B, so z = A / (q - B), and q = 0 is invalid. RVL payloads are refused.
    """
    low = (fmt or "").lower()
    if "compresseddepth" not in low.replace(" ", ""):
        raise InputError(f"compressed depth format '{fmt}' is not compressedDepth (compressed_depth_image_transport)")
    if "rvl" in low:
        raise InputError(f"compressed depth format '{fmt}': RVL payloads are not supported; record png")
    encoding = {"MONO16": "16UC1"}.get(low.split(";")[0].strip().upper(), low.split(";")[0].strip().upper())
    if encoding not in ("16UC1", "32FC1"):
        raise InputError(f"compressed depth format '{fmt}': original encoding must be 16UC1 (or mono16) or 32FC1")
    buf = _as_bytes(data)
    if buf.size < COMPRESSED_DEPTH_HEADER + 24:
        raise InputError(f"compressedDepth payload of {buf.size} bytes is too short")
    quant_a, quant_b = struct.unpack("<ff", bytes(buf[4:COMPRESSED_DEPTH_HEADER]))
    png = buf[COMPRESSED_DEPTH_HEADER:]
    kind, width, height = image_size_from_header(png)
    _check_dims(width, height, f"compressedDepth {kind} header")
    if width * height > MAX_PIXELS:
        raise InputError(f"compressedDepth header says {width}x{height}: over the {MAX_PIXELS} pixel limit")
    img = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16 or img.ndim != 2:
        raise InputError(f"compressedDepth payload is not a one-channel 16-bit {kind}")
    if encoding == "16UC1":
        return img.astype(np.float32) / np.float32(1000.0)
    q = img.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (q - np.float32(quant_b))
    depth[(img == 0) | ~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth.astype(np.float32)
