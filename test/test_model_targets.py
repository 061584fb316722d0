"""The shipped default model against the accuracy targets of issue 10, on held-out real data.

real_eval is only evaluated here, never trained, calibrated or tuned on. Each target is one
test; a target the model misses is a strict xfail (it fails the suite the day it is met, so
the marker comes off), and a guard below each keeps today's figure from getting worse.
Figures and commands: docs/model.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reflector_ros.weights import default_model

REPO = Path(__file__).resolve().parent.parent
REAL_EVAL = REPO.parent / "shared" / "data" / "real_eval"
ROOMS = ("7scenes_redkitchen", "home_kinect", "nyu_v2", "redwood", "replica", "sun3d")


@pytest.fixture(scope="module")
def backend():
    onnx = default_model(".onnx")
    if not onnx.exists():
        pytest.skip(f"embedded model not built yet at {onnx}")
    from reflector_ros.backends import make_backend

    return make_backend("onnxruntime", str(onnx))


@pytest.fixture(scope="module")
def rooms(backend) -> dict:
    """reflector eval's per-group results on real_eval's room groups, and each group's
    per-frame median-GT oracle."""
    if not (REAL_EVAL / "manifest.json").exists():
        pytest.skip(f"real_eval not found at {REAL_EVAL} (shared data is beside the repo only on project machines)")
    from reflector_ros.data.registry import open_dataset
    from reflector_ros.train.evaluate import backend_predictor, evaluate_dataset

    ds = open_dataset(f"manifest:{REAL_EVAL}")
    model = evaluate_dataset(ds, backend_predictor(backend), max_depth=10.0, progress=False)["groups"]
    oracle = evaluate_dataset(ds, None, max_depth=10.0, baseline="median-gt", progress=False)["groups"]
    return {"model": {g: model[g] for g in ROOMS}, "oracle": {g: oracle[g] for g in ROOMS}}


def _mean(rooms: dict, kind: str, key: str) -> float:
    return float(np.mean([rooms["model"][g][kind][key] for g in ROOMS]))


@pytest.fixture(scope="module")
def hololens(backend, hololens_dir: Path) -> dict:
    from reflector_ros.data.registry import open_dataset
    from reflector_ros.train.evaluate import backend_predictor, evaluate_dataset

    ds = open_dataset(f"manifest:{hololens_dir}?frames=250:373")
    return evaluate_dataset(ds, backend_predictor(backend), max_depth=10.0, progress=False)


# ----------------------------------------------------------------------------- real_eval rooms

# today's figures (docs/model.md) and guards with room for run-to-run noise
ROOMS_METRIC_XFAIL = "v2.1: rooms metric AbsRel 0.282 (v1 0.434); target 0.25"
ROOMS_ORACLE_XFAIL = ("v2.1 beats the per-frame median oracle in 4 of 6 room groups (v1: 1); "
                      "7scenes (0.378 vs 0.343) and redwood (0.499 vs 0.229) are still worse")
ROOMS_MEDIAN_XFAIL = "v2.1: rooms median-scaled AbsRel 0.204 (v2 0.200, v1 0.303); target 0.17"
ROOMS_D1_XFAIL = "v2.1: rooms delta1 0.527 (v2 0.532, v1 0.305); target 0.60"
HOLO_XFAIL = "v2.1: HoloLens 250-372 metric AbsRel 0.223 (v1 0.298); target 0.15"
GUARD_ROOMS_METRIC = 0.32
GUARD_ROOMS_MEDIAN = 0.23
GUARD_HOLO = 0.25


@pytest.mark.xfail(strict=True, reason=ROOMS_METRIC_XFAIL)
def test_rooms_metric_abs_rel_target(rooms) -> None:
    assert _mean(rooms, "metric", "abs_rel") <= 0.25


@pytest.mark.xfail(strict=True, reason=ROOMS_ORACLE_XFAIL)
def test_every_room_group_beats_its_median_oracle(rooms) -> None:
    worse = {g: (round(rooms["model"][g]["metric"]["abs_rel"], 3), round(rooms["oracle"][g]["metric"]["abs_rel"], 3))
             for g in ROOMS if rooms["model"][g]["metric"]["abs_rel"] >= rooms["oracle"][g]["metric"]["abs_rel"]}
    assert not worse, worse


@pytest.mark.xfail(strict=True, reason=ROOMS_MEDIAN_XFAIL)
def test_rooms_median_scaled_abs_rel_target(rooms) -> None:
    assert _mean(rooms, "median_scaled", "abs_rel") <= 0.17


@pytest.mark.xfail(strict=True, reason=ROOMS_D1_XFAIL)
def test_rooms_delta1_target(rooms) -> None:
    assert _mean(rooms, "metric", "d1") >= 0.60


def test_rooms_guard(rooms) -> None:
    """Today's figures (docs/model.md), with room for run-to-run noise: no regression."""
    assert _mean(rooms, "metric", "abs_rel") < GUARD_ROOMS_METRIC
    assert _mean(rooms, "median_scaled", "abs_rel") < GUARD_ROOMS_MEDIAN


# ----------------------------------------------------------------------------- HoloLens 250-372

@pytest.mark.xfail(strict=True, reason=HOLO_XFAIL)
def test_hololens_held_out_target(hololens) -> None:
    assert hololens["metric"]["abs_rel"] <= 0.15


def test_hololens_held_out_guard(hololens) -> None:
    assert hololens["metric"]["abs_rel"] < GUARD_HOLO


@pytest.fixture(scope="module")
def focal_ratios(backend, hololens_dir: Path) -> list[float]:
    """Per held-out frame: median depth of the 2x centre zoom (fx doubled) / of the same
    region in the full frame (train/evaluate.focal_consistency)."""
    from reflector_ros.data.registry import open_dataset
    from reflector_ros.train.evaluate import backend_predictor, focal_ratios

    return focal_ratios(backend_predictor(backend), open_dataset(f"manifest:{hololens_dir}?frames=250:373"))


def test_focal_consistency_target(focal_ratios: list[float]) -> None:
    """A 2x centre zoom with fx doubled keeps the metric depth within 5 % (median over frames):
    1.031 for the shipped model, whose backbone was distilled for context (stage context;
    before it 1.075, v1 1.78)."""
    assert float(np.median(focal_ratios)) == pytest.approx(1.0, abs=0.05)


@pytest.fixture(scope="module")
def confidence_split(backend, hololens_dir: Path) -> tuple[float, float]:
    """(AbsRel of the most confident half of the pixels, AbsRel of all), per frame through the
    pipeline, averaged over every 4th held-out frame."""
    from reflector_ros.data.registry import open_dataset
    from reflector_ros.train.evaluate import confidence_ranking

    ds = open_dataset(f"manifest:{hololens_dir}?frames=250:373")
    every, confident = confidence_ranking(backend, [ds[i] for i in range(0, len(ds), 4)])
    return confident, every


def test_confidence_target(confidence_split: tuple[float, float]) -> None:
    """The most confident half has an AbsRel at least 15 % lower than all pixels (the learned
    error head: 22 % on these frames; the bin-spread confidence gave 7 %)."""
    confident, every = confidence_split
    assert confident <= 0.85 * every


def test_confidence_ranks_pixels_by_error(confidence_split: tuple[float, float]) -> None:
    """The confidence output means something: the most confident half is at least 3 % better."""
    confident, every = confidence_split
    assert confident <= 0.97 * every, confidence_split


def test_shipped_checkpoint_is_at_most_30_mb_and_loads_weights_only() -> None:
    """Issue 10's size target: the default checkpoint <= 30 MB, loaded with weights_only."""
    from reflector_ros.model.reflector import load_checkpoint

    pt = default_model(".pt")
    if not pt.exists():
        pytest.skip(f"embedded model not built yet at {pt}")
    assert pt.stat().st_size <= 30 * 2**20, pt.stat().st_size
    model, meta, _ = load_checkpoint(str(pt))
    assert meta.input_mode == "canonical" and sum(p.numel() for p in model.parameters()) > 3_000_000


def test_depth_is_smooth_where_the_world_is(backend, hololens_dir: Path) -> None:
    """No ripple in the cloud: on held-out HoloLens frames, neighbouring pixels (2 px apart)
    differ at most 2x as much as the ground truth's do (v2.1: 1.2x; v2, whose detail gain
    drew a 4-pixel pattern, 3.1x; tools/smoothness_check.py)."""
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    from smoothness_check import roughness

    from reflector_ros.data.manifest import ManifestDataset
    from reflector_ros.pipeline import DepthPipeline, FrameSettings

    pipe, ds = DepthPipeline(backend), ManifestDataset(hololens_dir, "250:373:12")
    ratios = []
    for s in ds:
        ok = (s.depth > 0)[::2, ::2]
        d = pipe.process(s.image, s.camera, FrameSettings()).depth[::2, ::2]
        ratios.append(roughness(d, ok & np.isfinite(d)) / roughness(s.depth[::2, ::2], ok))
    assert float(np.mean(ratios)) < 2.0, ratios
