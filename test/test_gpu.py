"""GPU paths: torch CUDA (fp32, fp16, CUDA graphs), the device-side cloud, ONNX Runtime's
CUDA provider. Skipped where torch has no CUDA device (CI, the development VM); run them
on a GPU machine with `python -m pytest test/test_gpu.py` (README, "The toolkit and development").

The CPU suite already checks the same torch_ops code on the CPU; these check that CUDA
gives the same answers, that static CUDA-graph buffers never leak into returned results,
and that the cloud lands in the caller's buffer with one device-to-host copy.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here (GPU tests run where a GPU is lent)")

from reflector_ros.backends import make_backend  # noqa: E402
from reflector_ros.core.camera import Intrinsics  # noqa: E402
from reflector_ros.backends.base import run  # noqa: E402
from reflector_ros.core.depth import Validity, finalize_depth  # noqa: E402
from reflector_ros.core.pointcloud import CloudSpec, build_cloud, ray_lengths, ray_table  # noqa: E402
from reflector_ros.meta import NetInput  # noqa: E402


def _run(backend, rgb, scale, out_hw, cloud=None, validity=None):
    net = NetInput(backend.meta.input_height, backend.meta.input_width, scale)
    return run(backend, rgb, net, out_hw, validity, cloud)


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * xx / w, 255 * yy / h, 128 + 60 * np.sin(xx / 7 + yy / 11 + seed)], -1)
    img[rng.integers(0, h // 2):, rng.integers(0, w // 2):] *= 0.5
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cpu(tiny_model_dir: Path):
    return make_backend("torch-cpu", tiny_model_dir / "tiny.pt")


@pytest.mark.parametrize("precision,graph", [("fp32", False), ("fp32", True), ("fp16", True)])
def test_cuda_agrees_with_cpu(tiny_model_dir: Path, cpu, precision: str, graph: bool) -> None:
    from reflector_ros.backends.torch_backend import TorchBackend

    gpu = TorchBackend(tiny_model_dir / "tiny.pt", device="cuda", precision=precision, cuda_graph=graph)
    assert ("CUDA graphs" in gpu.reason) == graph
    tol = 2e-3 if precision == "fp32" else 3e-2
    for seed, out_hw in ((0, (120, 160)), (1, (64, 80)), (2, (97, 131))):
        frame = _frame(120, 160, seed)
        a, b = _run(gpu, frame, 1.3, out_hw), _run(cpu, frame, 1.3, out_hw)
        assert a.depth.shape == out_hw and a.depth.dtype == np.float32
        rel = np.abs(a.depth - b.depth) / b.depth
        assert np.nanmedian(rel) < tol and np.nanmax(rel) < 10 * tol, (precision, graph, np.nanmax(rel))
        assert np.nanmax(np.abs(a.confidence - b.confidence)) < 10 * tol


def test_results_do_not_alias_static_buffers(tiny_model_dir: Path) -> None:
    gpu = make_backend("torch-cuda", tiny_model_dir / "tiny.pt")
    first = _run(gpu, _frame(120, 160, 0), 1.0, (120, 160))
    kept = first.depth.copy()
    _run(gpu, _frame(120, 160, 5), 2.0, (120, 160))      # replays the graph into the same buffers
    np.testing.assert_array_equal(first.depth, kept)


@pytest.mark.parametrize("stride", [1, 2])
def test_device_cloud_matches_host_bit_for_bit(tiny_model_dir: Path, stride: int) -> None:
    gpu = make_backend("torch-cuda", tiny_model_dir / "tiny.pt")
    h, w = 120, 160
    rays = ray_table(Intrinsics(150.0, 150.0, (w - 1) / 2, (h - 1) / 2, w, h), stride)
    out = np.zeros((*rays.shape[:2], 4), np.float32)
    frame = _frame(h, w, 3)
    probe = _run(gpu, frame, 1.0, (h, w)).depth
    lo, hi = np.nanquantile(probe, [0.1, 0.9])
    unseen = np.zeros((h, w), bool)
    unseen[:10, :20] = True
    validity = Validity(float(lo), float(hi), 0.01, unseen)
    spec = CloudSpec(rays, ray_lengths(rays), stride, 0.0, float(np.nanquantile(probe, 0.8)), 0.02, True, out=out)
    res = _run(gpu, frame, 1.0, (h, w), spec, validity)
    assert res.cloud is out and np.isnan(res.depth[unseen]).all()
    host = build_cloud(finalize_depth(res.depth, res.confidence, validity), res.confidence, frame,
                       dataclasses.replace(spec, out=None))
    valid = ~np.isnan(out[..., 2])
    assert 0 < valid.sum() < valid.size
    np.testing.assert_array_equal(out.view(np.uint32), host.view(np.uint32))


def test_onnxruntime_cuda_provider(tiny_model_dir: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider")
    gpu = make_backend("onnxruntime-cuda", tiny_model_dir / "tiny.onnx")
    cpu = make_backend("onnxruntime", tiny_model_dir / "tiny.onnx")
    frame = _frame(120, 160, 4)
    a, b = _run(gpu, frame, 1.0, (120, 160)), _run(cpu, frame, 1.0, (120, 160))
    assert np.nanmax(np.abs(a.depth - b.depth) / b.depth) < 1e-3


def test_canonical_model_follows_the_camera_on_cuda(tmp_path: Path) -> None:
    """Input sizes that follow the camera: one CUDA graph per size, each agreeing with the CPU."""
    from reflector_ros.meta import ModelMeta
    from reflector_ros.model.reflector import build_model, save_checkpoint

    torch.manual_seed(0)
    meta = ModelMeta(arch="lite0", input_height=64, input_width=80, n_bins=16, input_mode="canonical",
                     focal_canonical=60.0)
    save_checkpoint(tmp_path / "c.pt", build_model(meta).eval(), meta)
    gpu = make_backend("torch-cuda", tmp_path / "c.pt", precision="fp32")
    cpu = make_backend("torch-cpu", tmp_path / "c.pt")
    frame = _frame(120, 160, 6)
    for hw in ((64, 80), (72, 96), (64, 80)):
        net = NetInput(*hw, 1.0)
        a = run(gpu, frame, net, (120, 160))
        b = run(cpu, frame, net, (120, 160))
        assert np.nanmedian(np.abs(a.depth - b.depth) / b.depth) < 2e-3, hw
    assert len(gpu._graphs) == 2


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_training_steps_under_autocast(tmp_path: Path, amp_dtype: str) -> None:
    """The lite0 network trains under CUDA autocast (either type): finite losses, and a
    checkpoint that resumes (tools/device_train.py relies on this in its one shot)."""
    import json

    import yaml

    from reflector_ros.cli import main

    data = tmp_path / "synth"
    assert main(["synth", "--out", str(data), "--count", "6", "--height", "90", "--width", "120",
                 "--workers", "1", "--preview", "0"]) == 0
    cfg = {"model": {"arch": "lite0", "input_height": 64, "input_width": 96, "focal_canonical": 120.0,
                     "input_mode": "canonical", "n_bins": 16},
           "data": {"train": [{"spec": f"manifest:{data}", "weight": 1.0}], "workers": 0,
                    "val": {"s": f"manifest:{data}?frames=0:2"}, "val_frames": 2},
           "augment": {"crop_hw": [64, 96]},
           "train": {"stage": "end2end", "steps": 4, "batch_size": 4, "lr": 1e-3, "amp": True,
                     "amp_dtype": amp_dtype, "log_every": 1, "eval_every": 2, "ckpt_every": 2}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run), "--stop-at", "2"]) == 0
    assert main(["train", "--resume", str(run / "latest.pt"), "--out", str(run)]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
