"""Depth metrics on hand-computable arrays, crops, invariances, and the README baselines."""
from __future__ import annotations

import math

import numpy as np
import pytest

from reflector_ros.core.errors import InputError
from reflector_ros.train.metrics import (
    crop_mask, depth_metrics, eigen_crop, garg_crop, markdown_table, mean_metrics, median_scale, valid_mask,
)


def test_metrics_by_hand() -> None:
    gt = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    pred = np.array([[1.0, 2.5], [3.0, 8.0]], np.float32)
    m = depth_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx((0 + 0.25 + 0.25 + 0) / 4)
    assert m["sq_rel"] == pytest.approx((0 + 0.25 / 2 + 1.0 / 4 + 0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 1.0) / 4))
    e = np.log([1, 1.25, 0.75, 1])
    assert m["rmse_log"] == pytest.approx(math.sqrt(np.mean(e ** 2)))
    assert m["log10"] == pytest.approx(np.mean(np.abs(np.log10([1, 1.25, 0.75, 1]))))
    assert m["silog"] == pytest.approx(100 * math.sqrt(np.mean(e ** 2) - np.mean(e) ** 2))
    # ratios 1, 1.25, 1.333, 1: 1.25 is not < 1.25
    assert m["d1"] == pytest.approx(0.5)
    assert m["d2"] == pytest.approx(1.0)


def test_perfect_and_scaled_predictions() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 9.0, (30, 40)).astype(np.float32)
    perfect = depth_metrics(gt.copy(), gt)
    assert perfect["abs_rel"] == 0 and perfect["rmse"] == 0 and perfect["d1"] == 1.0
    doubled = depth_metrics(2 * gt, gt)
    assert doubled["abs_rel"] == pytest.approx(1.0)
    assert doubled["d1"] == 0.0 and doubled["d3"] == 0.0  # 2 > 1.25^3 = 1.95
    wider = depth_metrics(1.8 * gt, gt)
    assert (wider["d1"], wider["d2"], wider["d3"]) == (0.0, 0.0, 1.0)
    assert doubled["silog"] == pytest.approx(0.0, abs=1e-3)  # scale-invariant
    mask = valid_mask(gt)
    rescued = depth_metrics(median_scale(3.7 * gt, gt, mask), gt, mask)
    assert rescued["abs_rel"] == pytest.approx(0.0, abs=1e-5)


def test_invalid_pixels_masked_and_bad_predictions_penalised() -> None:
    gt = np.array([[0.0, 2.0], [np.nan, 12.0]], np.float32)
    mask = valid_mask(gt, max_depth=10.0)
    assert mask.tolist() == [[False, True], [False, False]]
    pred = np.full_like(gt, 2.0)
    assert depth_metrics(pred, gt, mask)["abs_rel"] == 0
    pred[0, 1] = np.nan  # a refused pixel counts as a (very) wrong one, not as a skipped one
    assert depth_metrics(pred, gt, mask)["abs_rel"] > 0.99
    with pytest.raises(InputError, match="no valid"):
        depth_metrics(pred, np.zeros_like(gt))
    with pytest.raises(InputError, match="shape"):
        depth_metrics(pred[:1], gt)


def test_crops() -> None:
    assert eigen_crop(480, 640) == (45, 471, 41, 601)
    assert eigen_crop(240, 320) == (22, 236, 20, 300)  # proportional on half-size frames
    t, b, l, r = garg_crop(375, 1242)
    assert (t, b, l, r) == (153, 371, 44, 1197)
    m = crop_mask(480, 640, "eigen")
    assert m.sum() == (471 - 45) * (601 - 41)
    assert crop_mask(4, 5, "none").all()
    with pytest.raises(InputError, match="unknown crop"):
        crop_mask(4, 5, "center")


def test_mean_and_table() -> None:
    rows = [depth_metrics(np.full((2, 2), v, np.float32), np.ones((2, 2), np.float32)) for v in (1.0, 1.5)]
    m = mean_metrics(rows)
    assert m["abs_rel"] == pytest.approx(0.25) and m["n"] == 2
    table = markdown_table({"set": m})
    assert "| set | 2 | 0.250 |" in table
    with pytest.raises(InputError):
        mean_metrics([])


def test_readme_baselines_on_hololens(hololens_dir) -> None:
    """The README's table: constant 2.5 m -> AbsRel 0.364, per-frame median GT -> 0.252."""
    from reflector_ros.data.registry import open_dataset
    from reflector_ros.train.evaluate import baseline_depth

    const, oracle = [], []
    for sample in open_dataset(f"manifest:{hololens_dir}"):  # one pass: reading frames dominates
        mask = valid_mask(sample.depth, max_depth=10.0)
        const.append(depth_metrics(baseline_depth("constant", sample, mask, 2.5), sample.depth, mask))
        oracle.append(depth_metrics(baseline_depth("median-gt", sample, mask, 2.5), sample.depth, mask))
    c, o = mean_metrics(const), mean_metrics(oracle)
    assert c["n"] == 373
    assert c["abs_rel"] == pytest.approx(0.364, abs=0.0005)
    assert c["d1"] == pytest.approx(0.446, abs=0.0005)
    assert o["abs_rel"] == pytest.approx(0.252, abs=0.0005)
    assert o["d1"] == pytest.approx(0.586, abs=0.0005)
