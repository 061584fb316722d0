"""Raw and compressed frame decoding against references built independently of the decoder."""
from __future__ import annotations

import array
import re
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from reflector_ros.core.decode import SUPPORTED_ENCODINGS, decode_compressed, decode_compressed_depth, decode_image
from reflector_ros.core.limits import MAX_SIDE
from reflector_ros.core.errors import InputError

H, W = 24, 32


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _pad_rows(packed: np.ndarray, pad: int) -> tuple[bytes, int]:
    """(H, row_bytes) -> bytes with ``pad`` junk bytes after every row, and the step."""
    h, row = packed.shape
    out = np.full((h, row + pad), 0xAB, np.uint8)
    out[:, :row] = packed
    return out.tobytes(), row + pad


def _yuv422(rgb: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
    """Pack 4:2:2 bytes by hand (BT.601 video range, as OpenCV decodes) from an image whose
    horizontal pixel pairs share one colour, so the chroma subsampling loses nothing."""
    pairs = rgb.copy()
    pairs[:, 1::2] = pairs[:, 0::2]
    f = pairs.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    y, u, v = (np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    h, w = y.shape
    out = np.empty((h, w // 2, 4), np.uint8)
    y0, y1, u0, v0 = y[:, 0::2], y[:, 1::2], u[:, 0::2], v[:, 0::2]
    if order == "uyvy":
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = u0, y0, v0, y1
    else:
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = y0, u0, y1, v0
    return out.reshape(h, w * 2), pairs


def _raw(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(packed rows, expected RGB) for a byte-exact encoding."""
    if encoding == "rgb8":
        return rgb.reshape(H, -1), rgb
    if encoding == "bgr8":
        return rgb[..., ::-1].reshape(H, -1), rgb
    if encoding in ("rgba8", "bgra8"):
        a = np.full((H, W, 1), 77, np.uint8)
        src = rgb if encoding == "rgba8" else rgb[..., ::-1]
        return np.concatenate([src, a], axis=2).reshape(H, -1), rgb
    if encoding == "mono8":
        grey = rgb[..., 1]
        return grey, np.repeat(grey[..., None], 3, axis=2)
    raise AssertionError(encoding)


@pytest.mark.parametrize("pad", [0, 13])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_exact_encodings(rgb, encoding, pad):
    packed, expected = _raw(rgb, encoding)
    data, step = _pad_rows(packed, pad)
    out = decode_image(data, encoding, W, H, step, 0)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("pad", [0, 6])
@pytest.mark.parametrize("encoding,order", [("uyvy", "uyvy"), ("yuv422", "uyvy"),
                                            ("yuyv", "yuyv"), ("yuv422_yuy2", "yuyv")])
def test_yuv422_encodings(rgb, encoding, order, pad):
    packed, expected = _yuv422(rgb, order)
    data, step = _pad_rows(packed, pad)
    out = decode_image(data, encoding, W, H, step, 0)
    assert out.shape == (H, W, 3)
    err = np.abs(out.astype(int) - expected.astype(int))
    # video-range round trip of 8-bit values: a few codes, never a channel swap (that is ~100)
    assert err.max() <= 4, (encoding, err.max())


def test_yuv_alias_order_differs(rgb):
    """Decoding UYVY bytes as YUYV must visibly differ: guards against swapped aliases."""
    packed, expected = _yuv422(rgb, "uyvy")
    wrong = decode_image(packed.tobytes(), "yuyv", W, H, W * 2, 0)
    assert np.abs(wrong.astype(int) - expected.astype(int)).mean() > 20


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample a Bayer mosaic by hand: ``pattern`` names the colours of the top-left 2x2 cell
    in reading order (ROS image_encodings), e.g. rggb = R G / G B."""
    chan = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, chan[c]]
    return out


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_encodings(pattern, pad):
    """Flat colour patches survive demosaicing; a wrong pattern map swaps red and blue or
    mixes green in, which moves a saturated patch by ~100 codes."""
    blocks = np.array([[[200, 30, 40], [20, 180, 60]], [[30, 50, 210], [120, 120, 120]]], np.uint8)
    rgb = np.repeat(np.repeat(blocks, H // 2, axis=0), W // 2, axis=1)
    data, step = _pad_rows(_mosaic(rgb, pattern), pad)
    out = decode_image(data, f"bayer_{pattern}8", W, H, step, 0)
    assert out.shape == (H, W, 3)
    inner = (slice(2, H // 2 - 2), slice(2, W // 2 - 2))   # away from patch edges and the border
    for by in range(2):
        for bx in range(2):
            ys = slice(by * H // 2 + inner[0].start, by * H // 2 + inner[0].stop)
            xs = slice(bx * W // 2 + inner[1].start, bx * W // 2 + inner[1].stop)
            err = np.abs(out[ys, xs].astype(int) - blocks[by, bx].astype(int)).max()
            assert err <= 2, (pattern, by, bx, err)


def test_bayer_pattern_matters():
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 220
    out = decode_image(_mosaic(rgb, "rggb").tobytes(), "bayer_bggr8", W, H, W, 0)
    assert out[4:-4, 4:-4, 2].mean() > 150 and out[4:-4, 4:-4, 0].mean() < 50  # red read as blue


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "array", "ndarray"])
def test_buffer_types(rgb, kind):
    raw = rgb.tobytes()
    data = {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw),
            "array": array.array("B", raw), "ndarray": np.frombuffer(raw, np.uint8).copy()}[kind]
    np.testing.assert_array_equal(decode_image(data, "rgb8", W, H, W * 3, 0), rgb)


def test_rgb8_is_zero_copy(rgb):
    buf = bytearray(rgb.tobytes())
    out = decode_image(buf, "rgb8", W, H, W * 3, 0)
    assert np.shares_memory(out, np.frombuffer(buf, np.uint8))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(encoding="bayer_rggb16"), "not camera colour input"),
    (dict(encoding="bayer_xyzw8"), "unsupported image encoding 'bayer_xyzw8'"),
    (dict(encoding="nv12"), "supported: rgb8"),
    (dict(encoding="mono16"), "not camera colour input"),
    (dict(encoding="16UC1"), "not camera colour input"),
    (dict(encoding="32FC1"), "not camera colour input"),
    (dict(encoding="mono16", is_bigendian=1), "big-endian"),
    (dict(width=0), "width is 0"),
    (dict(height=0), "height is 0"),
    (dict(width=MAX_SIDE + 1), "absurd"),
    (dict(height=100000), "absurd"),
    (dict(step=W * 3 - 1), "shorter than one row"),
    (dict(data=b"\0" * 10), "expected step x height"),
    (dict(encoding="uyvy", width=W - 1, step=W * 2), "must be even"),
])
def test_bad_raw_input(rgb, kwargs, needle):
    args = dict(data=rgb.tobytes(), encoding="rgb8", width=W, height=H, step=W * 3, is_bigendian=0)
    args.update(kwargs)
    with pytest.raises(InputError, match=needle):
        decode_image(**args)


def test_absurd_size_refused_before_allocation():
    t0 = time.perf_counter()
    with pytest.raises(InputError):
        decode_image(b"0123456789", "rgb8", 10, 100000, 30, 0)
    with pytest.raises(InputError, match="expected step x height"):   # under MAX_SIDE, but no data
        decode_image(b"0123456789", "rgba8", 16000, 16000, 64000, 0)
    with pytest.raises(InputError, match="expected step x height"):   # numpy ints must not wrap around
        decode_image(b"0123456789", "rgba8", np.uint16(16000), np.uint16(16000), np.uint16(64000), 0)
    assert time.perf_counter() - t0 < 0.5


def test_supported_list_is_complete():
    assert set(SUPPORTED_ENCODINGS) == {"rgb8", "bgr8", "rgba8", "bgra8", "mono8",
                                        "uyvy", "yuv422", "yuyv", "yuv422_yuy2",
                                        "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"}


# ---------------------------------------------------------------- compressed


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8"])
def test_jpeg(fmt):
    # smooth image so JPEG error is small and a channel swap would be obvious
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([xx * 8, yy * 10, 255 - xx * 8], axis=2).clip(0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = decode_compressed(enc.tobytes(), fmt)
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 4


def test_png_exact(rgb):
    ok, enc = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_compressed(array.array("B", enc.tobytes()), "bgr8; png compressed bgr8"), rgb)


def _png(arr: np.ndarray, color_type: int, bit_depth: int = 8) -> bytes:
    """A PNG written by hand (zlib + struct, not OpenCV): 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA."""
    h = arr.shape[0]
    dt = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\0" + np.ascontiguousarray(arr[y]).astype(dt).tobytes() for y in range(h))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", arr.shape[1], h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


TWELVE_BIT = np.random.default_rng(2).integers(0, 4096, (H, W), dtype=np.uint16)   # a 12-bit sensor in mono16
REFUSAL = "is a 16/32-bit or depth encoding, not camera colour input; the depth network needs an 8-bit colour image ("


def test_png_grey_rgba_and_grey_alpha_are_colour(rgb):
    grey = rgb[..., 0]
    ok, enc = cv2.imencode(".png", grey)
    np.testing.assert_array_equal(decode_compressed(enc, "png"), np.repeat(grey[..., None], 3, axis=2))
    rgba = np.concatenate([rgb, np.full((H, W, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_compressed(_png(rgba, 6), "rgba8; png compressed rgba8"), rgb)
    grey_alpha = np.stack([grey, np.full_like(grey, 200)], axis=2)
    np.testing.assert_array_equal(decode_compressed(_png(grey_alpha, 4), "png"), np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("fmt", ["mono16; png compressed mono16", "png", "16UC1; png compressed 16UC1",
                                 "bgr8; png compressed bgr8"])
def test_16bit_grey_png_refused_like_the_raw_topic(fmt):
    """12-bit values in a 16-bit PNG used to come out as 0..15 (a black frame): refused, whatever
    the format string claims, with the raw topic's own words."""
    with pytest.raises(InputError) as compressed:
        decode_compressed(_png(TWELVE_BIT, 0, 16), fmt)
    assert "16-bit grey (uint16, 1 channel)" in str(compressed.value)
    with pytest.raises(InputError) as raw:
        decode_image(TWELVE_BIT.tobytes(), "mono16", W, H, W * 2)
    assert REFUSAL in str(raw.value)
    assert str(compressed.value).split(" is a ", 1)[1] == str(raw.value).split(" is a ", 1)[1]


@pytest.mark.parametrize("color_type,channels,needle", [(2, 3, "16-bit colour (uint16, 3 channels)"),
                                                        (6, 4, "16-bit colour+alpha (uint16, 4 channels)"),
                                                        (4, 2, "16-bit colour+alpha (uint16, 4 channels)")])
def test_16bit_colour_pngs_refused(color_type, channels, needle):
    arr = np.stack([TWELVE_BIT] * channels, axis=2)
    with pytest.raises(InputError, match=re.escape(needle)) as err:
        decode_compressed(_png(arr, color_type, 16), "rgb16; png compressed rgb16")
    assert REFUSAL in str(err.value)


@pytest.mark.parametrize("fmt", ["mono16; jpeg compressed mono8", "16UC1; jpeg compressed mono8",
                                 "rgb16; jpeg compressed bgr8", "32FC1; png compressed bgr8"])
def test_wide_source_encodings_refused_by_the_format(rgb, fmt):
    """A mono16 stream sent as JPEG was cut to 8 bits on the way (12-bit values near black):
    the payload is 8-bit, so the format's source encoding is what gives it away."""
    ok, enc = cv2.imencode(".jpg", rgb[..., 0])
    with pytest.raises(InputError) as err:
        decode_compressed(enc.tobytes(), fmt)
    assert REFUSAL in str(err.value) and fmt.split(";")[0] in str(err.value)


def test_jpeg_is_read_as_stored_without_exif_rotation():
    """An EXIF "rotate 90" tag is not applied: calibrations describe the stored pixels."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = 255                       # left half white (as stored)
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = enc.tobytes()
    # APP1 Exif, little-endian TIFF, one IFD entry: Orientation (0x0112) SHORT = 6 (rotate 90 CW)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) \
        + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    with_exif = data[:2] + app1 + data[2:]
    assert cv2.imdecode(np.frombuffer(with_exif, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (W, H)  # OpenCV rotates
    out = decode_compressed(with_exif, "jpeg")
    assert out.shape == (H, W, 3)
    assert out[:, : W // 2 - 2].mean() > 240 and out[:, W // 2 + 2:].mean() < 15


def _png_with_size(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\0" * 64


def test_huge_png_refused_before_decode():
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="20000"):
        decode_compressed(_png_with_size(20000, 20000), "png")
    assert time.perf_counter() - t0 < 0.5


def test_huge_jpeg_refused_before_decode(rgb):
    ok, enc = cv2.imencode(".jpg", rgb)
    data = bytearray(enc.tobytes())
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    struct.pack_into(">HH", data, sof + 5, 30000, 30000)   # height, width
    with pytest.raises(InputError, match="30000"):
        decode_compressed(bytes(data), "jpeg")


@pytest.mark.parametrize("case", ["random", "short", "png_crc", "jpeg_no_sof", "empty"])
def test_corrupt_compressed(rgb, case):
    ok, png = cv2.imencode(".png", rgb)
    png = bytearray(png.tobytes())
    data = {
        "random": np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "short": b"\xff\xd8\xff",
        "png_crc": bytes(png[:40]) + bytes(b ^ 0x5A for b in png[40:]),
        "jpeg_no_sof": b"\xff\xd8\xff\xe0\x00\x10" + b"JFIF\0" + b"\0" * 9 + b"\xff\xd9",
        "empty": b"",
    }[case]
    with pytest.raises(InputError):
        decode_compressed(data, "png")


def test_compressed_depth_refused(rgb):
    ok, enc = cv2.imencode(".png", rgb)
    with pytest.raises(InputError, match="compressed depth"):
        decode_compressed(enc.tobytes(), "16UC1; compressedDepth png")


@pytest.mark.parametrize("codec", [".png", ".jpg"])
@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_compressed_bayer_is_demosaiced(pattern, codec):
    """compressed_image_transport stores a raw mosaic as one channel with the format
    'bayer_xxxx8; png compressed ': the result is the raw topic's colour image (exactly, for
    lossless PNG), not the grey mosaic."""
    blocks = np.array([[[200, 30, 40], [20, 180, 60]], [[30, 50, 210], [120, 120, 120]]], np.uint8)
    rgb = np.repeat(np.repeat(blocks, H // 2, axis=0), W // 2, axis=1)
    mosaic = _mosaic(rgb, pattern)
    ok, enc = cv2.imencode(codec, mosaic, [cv2.IMWRITE_JPEG_QUALITY, 100] if codec == ".jpg" else [])
    fmt = f"bayer_{pattern}8; {'png' if codec == '.png' else 'jpeg'} compressed "
    out = decode_compressed(enc.tobytes(), fmt)
    raw = decode_image(mosaic.tobytes(), f"bayer_{pattern}8", W, H, W, 0)
    if codec == ".png":
        assert np.array_equal(out, raw)
    else:  # a lossy mosaic: close in the flat patches
        inner = out[2:H // 2 - 2, 2:W // 2 - 2].astype(int) - raw[2:H // 2 - 2, 2:W // 2 - 2].astype(int)
        assert np.abs(inner).mean() < 6
    grey = decode_compressed(enc.tobytes(), fmt.replace(f"bayer_{pattern}8", "mono8"))
    assert np.abs(grey.astype(int) - raw.astype(int)).mean() > 20   # what it used to give


def test_compressed_unknown_bayer_pattern_refused():
    ok, enc = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="unsupported Bayer pattern 'bayer_xyzw8'"):
        decode_compressed(enc.tobytes(), "bayer_xyzw8; png compressed ")


def _compressed_depth(png_values: np.ndarray, quant_a: float = 0.0, quant_b: float = 0.0) -> bytes:
    """compressed_depth_image_transport's payload: int32 format, float32 A and B, a 16-bit PNG."""
    ok, png = cv2.imencode(".png", png_values)
    assert ok
    return struct.pack("<iff", 0, quant_a, quant_b) + png.tobytes()


def test_compressed_depth_16uc1_and_32fc1():
    """Both compressedDepth kinds decode to metres with 0 invalid: 16UC1 stores millimetres,
    32FC1 stores inverse depth quantised as q = A / z + B (the transport's defaults
    depth_quantization 100, depth_max 10: A = 100 * 101, B = 1 - A / 10), so z = A / (q - B)."""
    rng = np.random.default_rng(0)
    mm = rng.integers(300, 9000, (48, 64)).astype(np.uint16)
    mm[0, :5] = 0
    got = decode_compressed_depth(_compressed_depth(mm), "16UC1; compressedDepth png")
    np.testing.assert_array_equal(got, mm.astype(np.float32) / 1000)
    assert got.dtype == np.float32 and (got[0, :5] == 0).all()

    z = rng.uniform(0.4, 9.5, (48, 64)).astype(np.float32)
    a = 100.0 * 101.0
    b = 1.0 - a / 10.0
    q = (a / z + b).astype(np.uint16)      # the encoder's truncation
    q[1, :3] = 0                            # beyond depth_max or invalid
    got = decode_compressed_depth(_compressed_depth(q, a, b), "32FC1; compressedDepth png")
    ok = q > 0
    assert (got[~ok] == 0).all()
    # quantisation: one step of q is z^2 / A metres, 9 mm at 9.5 m
    assert np.abs(got[ok] - z[ok]).max() <= (z[ok] ** 2 / a).max() + 1e-4
    assert decode_compressed_depth(_compressed_depth(mm), "16UC1; compressedDepth").shape == (48, 64)   # older format
    np.testing.assert_array_equal(decode_compressed_depth(_compressed_depth(mm), "mono16; compressedDepth png"),
                                  mm.astype(np.float32) / 1000)
    for fmt, needle in (("16UC1; compressedDepth rvl", "RVL"), ("png", "not compressedDepth"),
                        ("8UC3; compressedDepth png", "must be 16UC1")):
        with pytest.raises(InputError, match=needle):
            decode_compressed_depth(_compressed_depth(mm), fmt)
    with pytest.raises(InputError, match="too short"):
        decode_compressed_depth(b"\x00" * 20, "16UC1; compressedDepth png")
    ok8, png8 = cv2.imencode(".png", (mm // 256).astype(np.uint8))
    with pytest.raises(InputError, match="one-channel 16-bit"):
        decode_compressed_depth(struct.pack("<iff", 0, 0, 0) + png8.tobytes(), "16UC1; compressedDepth png")
