"""Shared fixtures: an isolated ROS 2 graph per test run and a tiny real model.

Every test run gets its own ROS_DOMAIN_ID and stays on loopback, so parallel runs
(and other machines) never hear each other.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"  # the Humble spelling; Kilted ignores it with a note
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_HW = (64, 80)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised small Reflector at 64x80: checkpoint, fused and pair ONNX.

    A real network through the real exporter; only the weights are untrained.
    """
    import torch

    from reflector_ros.meta import ModelMeta
    from reflector_ros.model.export import export_onnx
    from reflector_ros.model.reflector import build_model, save_checkpoint

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_model")
    meta = ModelMeta(arch="small", input_height=TINY_HW[0], input_width=TINY_HW[1], n_bins=16)
    model = build_model(meta).eval()
    save_checkpoint(out / "tiny.pt", model, meta)
    export_onnx(model, meta, out, stem="tiny")
    return out


@pytest.fixture(scope="session")
def hololens_dir() -> Path:
    path = SHARED_DATA / "hololens_office"
    if not (path / "manifest.json").exists():
        pytest.skip(f"real sequence not found at {path} (shared data is beside the repo only on project machines)")
    return path


@pytest.fixture(scope="module")
def harness(request: pytest.FixtureRequest):
    """One test-side rclpy node per test module (ros_helpers.Harness), subscribed to
    /diagnostics, named after the module."""
    from ros_helpers import Harness

    h = Harness(f"reflector_{request.module.__name__.rsplit('.', 1)[-1]}")
    h.subscribe_diagnostics()
    yield h
    h.close()
