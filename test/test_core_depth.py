"""REP 118 validity masks, millimetre encoding and the colormap."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from reflector_ros.core.depth import Validity, colorize, depth_legend, finalize_depth, nice_ticks, to_millimetres
from reflector_ros.core.errors import InputError

NAN = math.nan


def test_finalize_cases():
    depth = np.array([[NAN, math.inf, -math.inf, 0.0, -1.0, 0.05],
                      [0.1, 1.0, 10.0, 10.5, 2.0, 3.0]], np.float32)
    conf = np.array([[1, 1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 0.2, NAN]], np.float32)
    out = finalize_depth(depth, conf, Validity(0.1, 10.0, min_confidence=0.5))
    expected = np.array([[NAN] * 6, [0.1, 1.0, 10.0, NAN, NAN, NAN]], np.float32)
    np.testing.assert_array_equal(out, expected)     # NaN == NaN in assert_array_equal
    assert out.dtype == np.float32 and not np.any(out == 0.0)
    # without a confidence threshold the low-confidence pixels stay
    keep = finalize_depth(depth, conf, Validity(0.1, 10.0))
    assert keep[1, 4] == 2.0 and keep[1, 5] == 3.0
    assert np.isnan(finalize_depth(depth, None, Validity(0.1, 10.0))[1, 3])


def test_finalize_never_zero_with_zero_min():
    depth = np.array([[0.0, -0.0, 1e-30, 5.0]], np.float32)
    out = finalize_depth(depth, None, Validity(0.0, math.inf))
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 1])
    assert out[0, 2] == np.float32(1e-30) and out[0, 3] == 5.0


def test_finalize_in_place():
    depth = np.random.default_rng(0).uniform(0, 30, (16, 20)).astype(np.float32)
    ref = finalize_depth(depth, None, Validity(0.5, 20.0))
    res = finalize_depth(depth, None, Validity(0.5, 20.0), out=depth)
    assert res is depth
    np.testing.assert_array_equal(depth, ref)


@pytest.mark.parametrize("args", [(1.0, 1.0), (5.0, 1.0), (NAN, 1.0)])
def test_finalize_bad_range(args):
    with pytest.raises(InputError):
        finalize_depth(np.ones((2, 2), np.float32), None, Validity(*args))


def test_finalize_shape_mismatch():
    with pytest.raises(InputError, match="does not match"):
        finalize_depth(np.ones((2, 2), np.float32), np.ones((3, 2), np.float32), Validity(0.1, 10))


def test_millimetres():
    depth = np.array([[1.2344, 1.2346, NAN, 70.0, 65.535, 0.0004, -1.0, math.inf, 0.001]], np.float32)
    mm = to_millimetres(depth)
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, [[1234, 1235, 0, 0, 65535, 0, 0, 0, 1]])
    out = np.full(depth.shape, 7, np.uint16)
    assert to_millimetres(depth, out=out) is out
    np.testing.assert_array_equal(out, mm)


def test_colorize():
    depth = np.array([[0.5, 10.0, NAN, 5.25, 100.0, 0.0]], np.float32)
    bgr = colorize(depth, 0.5, 10.0)
    assert bgr.shape == (1, 6, 3) and bgr.dtype == np.uint8
    turbo = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO)[:, 0]
    np.testing.assert_array_equal(bgr[0, 0], turbo[255])        # nearest: the warm end
    np.testing.assert_array_equal(bgr[0, 1], turbo[0])          # farthest: the cold end
    assert bgr[0, 0, 2] > bgr[0, 0, 0] and bgr[0, 1, 0] > bgr[0, 1, 2]   # red near, blue far
    np.testing.assert_array_equal(bgr[0, 2], [0, 0, 0])         # NaN black
    np.testing.assert_array_equal(bgr[0, 4], turbo[0])          # beyond range clips to far
    np.testing.assert_array_equal(bgr[0, 5], turbo[255])        # below range clips to near


def test_colorize_monotonic_ramp():
    depth = np.linspace(1.0, 9.0, 200, dtype=np.float32)[None]
    bgr = colorize(depth, 1.0, 9.0).astype(int)
    turbo = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO)[:, 0].astype(int)
    # recover the index of each colour: must not increase with depth
    idx = np.array([np.argmin(np.abs(turbo - c).sum(axis=1)) for c in bgr[0]])
    assert np.all(np.diff(idx) <= 0) and idx[0] == 255 and idx[-1] <= 1


def test_unseen_pixels_are_invalid_whatever_their_depth():
    depth = np.full((3, 4), 2.0, np.float32)
    unseen = np.zeros((3, 4), bool)
    unseen[0, :2] = True
    out = finalize_depth(depth, None, Validity(0.1, 10.0, unseen=unseen))
    assert np.isnan(out[unseen]).all() and (out[~unseen] == 2.0).all()
    with pytest.raises(InputError, match="unseen"):
        finalize_depth(depth, None, Validity(unseen=np.zeros((2, 2), bool)))


def test_nice_ticks_are_round_and_inside_the_range():
    assert nice_ticks(0.2, 6.0) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert nice_ticks(0.0, 0.5) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    for lo, hi in ((0.256, 0.411), (0.9, 14.2), (1.23, 1.24), (3.0, 80.0)):
        t = nice_ticks(lo, hi)
        assert 2 <= len(t) <= 8 and all(lo - 1e-9 <= v <= hi + 1e-9 for v in t), (lo, hi, t)
        steps = np.diff(t)
        assert np.allclose(steps, steps[0])


def test_depth_legend_shows_the_colours_colorize_draws():
    """The key's bar, read at a tick's position, is the colour colorize gives that depth."""
    lo, hi, w = 0.5, 4.5, 640
    key = depth_legend(w, lo, hi)
    assert key.shape == (40, w, 3) and key.dtype == np.uint8
    bar = key[12]                                   # a row through the ramp
    cols = np.flatnonzero(np.ptp(bar.astype(int), axis=1) > 30)   # coloured, not the grey title
    x0, x1 = cols.min(), cols.max() + 1             # where the ramp lies
    for depth in (0.5, 1.0, 2.5, 4.0):
        x = int(round(x0 + (depth - lo) / (hi - lo) * (x1 - x0 - 1)))
        want = colorize(np.array([[depth]], np.float32), lo, hi)[0, 0].astype(int)
        assert np.abs(bar[x].astype(int) - want).max() <= 12, (depth, bar[x], want)
    # near is warm (red-ish) on the left, far cool (blue-ish) on the right
    assert bar[x0 + 2][2] > bar[x0 + 2][0] and bar[x1 - 3][0] > bar[x1 - 3][2]


def _blobs(cols: np.ndarray, gap: int) -> int:
    return 0 if cols.size == 0 else 1 + int((np.diff(cols) > gap).sum())


def test_legend_labels_never_overlap_however_narrow():
    """As many labels as tick marks, each standing apart (glyphs of one label sit < 8 px apart,
    labels at least 10): overlapping labels would merge into fewer blobs than ticks."""
    from reflector_ros.core.depth import colour_legend

    for w in (120, 160, 200, 320, 640):
        for lo, hi in ((0.2, 6.0), (30.0, 80.0), (0.5, 0.55)):
            key = depth_legend(w, lo, hi)
            ticks = _blobs(np.flatnonzero(key[20].min(axis=1) > 200), 1)
            labels = _blobs(np.flatnonzero((key[24:].min(axis=2) > 120).any(axis=0)), 7)
            assert ticks >= 2 or w <= 160, (w, lo, hi)
            assert labels == ticks, (w, lo, hi, ticks, labels)
    ramp = np.zeros((2, 3), np.uint8)
    with pytest.raises(InputError):
        colour_legend(100, ramp, 0.0, 1.0, "x", height=20)
    assert colour_legend(8, ramp, 0.0, 1.0, "x").shape == (40, 8, 3)   # too narrow: blank, no error


def test_infer_preview_of_flat_and_empty_depth():
    from reflector_ros.commands.infer import preview

    flat = np.full((60, 320, 3 - 2), 2.0, np.float32)[..., 0]
    img = preview(flat)
    assert img.shape == (100, 320, 3)
    none = preview(np.full((60, 320), np.nan, np.float32))
    assert none.shape == (100, 320, 3)
