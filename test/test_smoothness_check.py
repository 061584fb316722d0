"""tools/smoothness_check.py's measures on depth maps with known answers."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from smoothness_check import neighbour_steps, roughness  # noqa: E402


def test_a_fronto_parallel_plane_is_perfectly_smooth_and_has_no_edges() -> None:
    d = np.full((40, 60), 2.5, np.float32)
    ok = np.ones_like(d, bool)
    assert roughness(d, ok) == 0.0
    assert not neighbour_steps(d, ok)[2].any()


def test_a_washboard_is_rough_and_a_step_is_an_edge() -> None:
    h, w = 40, 60
    ok = np.ones((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    ripple = (3.0 * (1 + 0.02 * ((yy + xx) % 2))).astype(np.float32)   # every neighbour 2 % nearer or farther
    assert abs(roughness(ripple, ok) - np.log(1.02)) < 1e-4
    assert not neighbour_steps(ripple, ok)[2].any()                     # 2 % is texture, not a discontinuity
    step = np.where(np.arange(w)[None, :] < 30, 2.0, 3.0) * np.ones((h, 1))
    _, _, edge = neighbour_steps(step, ok)
    assert edge[:, 29].all() and edge[:, 30].all() and edge.sum() == 2 * h
    # invalid pixels are neither compared nor edges
    hole = ok.copy()
    hole[:, 30] = False
    _, _, edge = neighbour_steps(step, hole)
    assert not edge.any()


def test_sharpness_counts_the_steps_a_prediction_keeps() -> None:
    from smoothness_check import sharpness

    h, w = 20, 40
    ok = np.ones((h, w), bool)
    truth = np.where(np.arange(w)[None, :] < 20, 2.0, 3.0) * np.ones((h, 1))     # one 50 % step per row
    assert sharpness(truth, truth, ok) == 1.0
    blurred = 2.0 + np.clip((np.arange(w)[None, :] - 10) / 20, 0, 1) * np.ones((h, 1))   # the step spread over 20 px
    assert sharpness(blurred, truth, ok) == 0.0
    assert np.isnan(sharpness(truth, np.full((h, w), 2.0), ok))                   # no steps to show
