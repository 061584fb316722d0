"""Network input normalisation and map resizing against a float64 reference."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from reflector_ros.core.errors import InputError
from reflector_ros.core.preprocess import preprocess, resize_to
from reflector_ros.meta import ModelMeta, NetInput

META = ModelMeta(input_height=32, input_width=40)
NET = NetInput(32, 40, 1.0)


def _reference(rgb: np.ndarray, meta: ModelMeta, interp: int) -> np.ndarray:
    small = cv2.resize(rgb, (meta.input_width, meta.input_height), interpolation=interp).astype(np.float64)
    norm = (small / 255.0 - np.array(meta.mean)) / np.array(meta.std)
    return norm.transpose(2, 0, 1)[None]


@pytest.mark.parametrize("hw,interp", [((96, 120), cv2.INTER_AREA), ((16, 20), cv2.INTER_LINEAR),
                                       ((32, 40), cv2.INTER_AREA), ((64, 20), cv2.INTER_LINEAR)])
def test_matches_reference(hw, interp):
    rgb = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    x = preprocess(rgb, META, NET)
    assert x.shape == (1, 3, 32, 40) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, _reference(rgb, META, interp), atol=2e-5)


def test_channel_order_and_out_reuse():
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[..., 0] = 255                                  # pure red
    out = np.empty((1, 3, 32, 40), np.float32)
    x = preprocess(rgb, META, NET, out=out)
    assert x is out
    assert x[0, 0].mean() == pytest.approx((1 - META.mean[0]) / META.std[0], rel=1e-6)
    assert x[0, 2].mean() == pytest.approx(-META.mean[2] / META.std[2], rel=1e-6)


def test_strided_view_input():
    """decode_image returns row-strided views for padded rgb8; preprocess must accept them."""
    rng = np.random.default_rng(1)
    padded = rng.integers(0, 256, (48, 64 * 3 + 7), dtype=np.uint8)
    view = padded[:, : 64 * 3].reshape(48, 64, 3)
    np.testing.assert_allclose(preprocess(view, META, NET), preprocess(np.ascontiguousarray(view), META, NET))


@pytest.mark.parametrize("bad", [np.zeros((32, 40, 3), np.float32), np.zeros((32, 40), np.uint8),
                                 np.zeros((32, 40, 4), np.uint8), np.zeros((0, 40, 3), np.uint8)])
def test_bad_input(bad):
    with pytest.raises(InputError):
        preprocess(bad, META, NET)


def test_resize_to():
    m = np.random.default_rng(2).random((32, 40)).astype(np.float32)
    out = resize_to(m, (48, 64))
    assert out.shape == (48, 64) and out.dtype == np.float32
    np.testing.assert_array_equal(out, cv2.resize(m, (64, 48), interpolation=cv2.INTER_LINEAR))
    assert resize_to(m, (32, 40)) is m
    assert resize_to(m.astype(np.float64), (16, 20)).dtype == np.float32
    with pytest.raises(InputError):
        resize_to(m, (0, 10))


def test_fractional_shrink_is_close_to_inter_area_and_does_not_alias():
    """VGA -> 233x311 (a canonical-camera input): halving then bilinear stays within a grey
    level of INTER_AREA on a smooth image, and a 1-pixel checkerboard (the worst aliasing
    case) still averages to mid-grey instead of turning into a pattern."""
    from reflector_ros.core.preprocess import shrink

    v, u = np.mgrid[0:480, 0:640].astype(np.float64)
    smooth = 127 + 60 * np.sin(u / 37.0) * np.cos(v / 23.0) + 0.1 * (u - 320)
    rgb = np.repeat(np.clip(smooth, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    ours = shrink(rgb, (311, 233)).astype(np.float64)
    area = cv2.resize(rgb, (311, 233), interpolation=cv2.INTER_AREA).astype(np.float64)
    assert ours.shape == area.shape and np.abs(ours - area).mean() < 1.0
    checker = np.repeat((((u + v) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    out = shrink(checker, (311, 233)).astype(np.float64)
    assert abs(out.mean() - 127.5) < 2 and out.std() < 3
