"""Backends on the CPU: ONNX Runtime and torch on a real tiny model, torch_ops against
the numpy core, make_backend's choice and its refusals."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reflector_ros.backends import make_backend
from reflector_ros.backends.base import run as backend_run
from reflector_ros.core.depth import Validity
from reflector_ros.core.errors import InputError
from reflector_ros.meta import NetInput

REPO = Path(__file__).resolve().parent.parent


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth scene with some texture: gradients plus a few blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * xx / w, 255 * yy / h, 128 + 60 * np.sin(xx / 7 + yy / 11)], -1)
    for _ in range(4):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + h // 4, x0:x0 + w // 4] = rng.integers(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _run(backend, rgb: np.ndarray, scale: float, out_hw: tuple[int, int], cloud=None, validity=None,
         net_hw: tuple[int, int] | None = None):
    """infer + finish at the model's nominal input size with this focal scale."""
    hw = net_hw or (backend.meta.input_height, backend.meta.input_width)
    return backend_run(backend, rgb, NetInput(*hw, scale), out_hw, validity, cloud)


@pytest.fixture(scope="module")
def ort(tiny_model_dir: Path):
    return make_backend("onnxruntime", tiny_model_dir / "tiny.onnx", num_threads=1)


@pytest.fixture(scope="module")
def torch_cpu(tiny_model_dir: Path):
    import torch

    torch.set_num_threads(2)
    return make_backend("torch-cpu", tiny_model_dir / "tiny.pt")


def test_ort_outputs(ort) -> None:
    meta = ort.meta
    assert ort.name == "onnxruntime-cpu" and (meta.input_height, meta.input_width) == (64, 80)
    r = _run(ort, _frame(240, 320), 1.5, (120, 160))
    assert r.depth.shape == (120, 160) and r.depth.dtype == np.float32
    assert r.confidence.shape == (120, 160)
    assert np.isfinite(r.depth).all()  # untrained but valid: bins keep depth in range
    assert (r.depth >= meta.min_depth * 1.5 - 1e-4).all() and (r.depth <= meta.max_depth * 1.5 + 1e-4).all()
    assert (r.confidence >= 0).all() and (r.confidence <= 1).all()
    assert r.cloud is None
    assert set(r.timings_ms) >= {"preprocess", "inference", "postprocess", "points"}


def test_depth_doubles_with_focal_scale(ort) -> None:
    rgb = _frame(64, 80, seed=3)
    a = _run(ort, rgb, 1.0, (64, 80)).depth
    b = _run(ort, rgb, 2.0, (64, 80)).depth
    np.testing.assert_allclose(b, 2.0 * a, rtol=1e-5)
    # finish()'s scale (the floor anchor's) multiplies the same way, before validity
    maps = ort.infer(rgb, NetInput(64, 80, 1.0))
    c = ort.finish(maps, (64, 80), Validity(), 2.0).depth
    np.testing.assert_allclose(c, b, rtol=1e-5)


def test_cpu_spin_wait_is_an_ort_session_option(tiny_model_dir: Path, ort) -> None:
    spinning = make_backend("onnxruntime", tiny_model_dir / "tiny.onnx", num_threads=2, cpu_spin_wait=True)
    assert "spin-waiting" in spinning.reason and "spin-waiting" not in ort.reason
    frame = _frame(64, 80)
    np.testing.assert_allclose(_run(spinning, frame, 1.0, (64, 80)).depth, _run(ort, frame, 1.0, (64, 80)).depth,
                               rtol=1e-5)


def test_fused_and_pair_agree(tiny_model_dir: Path, ort) -> None:
    pair = make_backend("onnxruntime", tiny_model_dir / "tiny.onnx", num_threads=1, use_pair=True)
    assert "pair" in pair.reason
    rgb = _frame(96, 128, seed=5)
    a, b = _run(ort, rgb, 1.2, (96, 128)), _run(pair, rgb, 1.2, (96, 128))
    np.testing.assert_allclose(b.depth, a.depth, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.confidence, a.confidence, atol=1e-4)


def test_torch_cpu_agrees_with_ort(ort, torch_cpu) -> None:
    # At the network input size both preprocessings are the same arithmetic, so the
    # comparison isolates the network and the post-processing (upsampled output).
    rgb = _frame(64, 80, seed=7)
    a = _run(ort, rgb, 1.3, (128, 160))
    b = _run(torch_cpu, rgb, 1.3, (128, 160))
    assert torch_cpu.name == "torch-cpu"
    rel = np.linalg.norm(b.depth - a.depth) / np.linalg.norm(a.depth)
    assert rel <= 1e-3, rel
    assert np.abs(b.confidence - a.confidence).max() <= 1e-3


def test_torch_cpu_agrees_with_ort_after_resizing(ort, torch_cpu) -> None:
    # A VGA-like frame is shrunk: INTER_AREA (numpy) vs antialiased bilinear (torch)
    # differ slightly on texture; the metric depth must still agree closely.
    rgb = _frame(240, 320, seed=8)
    a, b = _run(ort, rgb, 1.0, (240, 320)), _run(torch_cpu, rgb, 1.0, (240, 320))
    rel = np.linalg.norm(b.depth - a.depth) / np.linalg.norm(a.depth)
    assert rel <= 2e-2, rel


# --- torch_ops against the numpy core -------------------------------------------------

def test_torch_preprocess_matches_core(tiny_model_dir: Path, ort) -> None:
    import torch

    from reflector_ros.backends import torch_ops
    from reflector_ros.core.preprocess import preprocess

    meta = ort.meta
    dev = torch.device("cpu")
    scale, bias = torch_ops.normalisation(meta, dev)
    hw = (meta.input_height, meta.input_width)

    def ours(rgb: np.ndarray) -> np.ndarray:
        return torch_ops.preprocess(torch_ops.upload_rgb(rgb, dev), hw, scale, bias).numpy()

    net = NetInput(*hw, 1.0)
    same = _frame(64, 80, seed=1)  # no resize: identical up to float rounding
    np.testing.assert_allclose(ours(same), preprocess(same, meta, net), atol=1e-5)
    # upsampling: both bilinear with half-pixel centres; both round to uint8 on the CPU
    # (cv2 in fixed point), so they agree to within one intensity level
    grow = _frame(32, 40, seed=2)
    assert np.abs(ours(grow) - preprocess(grow, meta, net)).max() <= 1.001 / 255 / min(meta.std)
    shrink = _frame(256, 320, seed=4)  # 4x shrink: both box averages
    diff = np.abs(ours(shrink) - preprocess(shrink, meta, net))
    assert diff.max() <= 1.001 / 255 / min(meta.std) and ours(shrink).shape == (1, 3, 64, 80)


@pytest.mark.parametrize("out_hw", [(203, 305), (173, 259), (128, 192), (100, 150), (85, 128), (64, 96),
                                    (50, 75), (300, 450)])
def test_torch_shrink_is_the_core_rule_on_a_real_photo(out_hw: tuple[int, int]) -> None:
    """torch_ops.shrink (the torch-CUDA and TensorRT-with-torch input path) gives the pixels
    core.preprocess.shrink gives (ONNX Runtime, training), within two grey levels (rounding twice), on a real
    photo (256x384) for every branch of the rule: bilinear up to 2x (1.26x, 1.48x, and 2x
    exactly), halving then bilinear (2.56x, 3.01x, 5.12x), a box for an integer factor above 2
    (4x), and growing. Antialiased bilinear, used before, was up to 26 grey levels off here
    (mean 1.3 at 2x) and up to 54 on the HoloLens office's edges."""
    import torch

    from reflector_ros.backends import torch_ops
    from reflector_ros.core.preprocess import shrink

    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(Path(__file__).parent / "data" / "chelsea.jpg")), cv2.COLOR_BGR2RGB)
    rgb = np.ascontiguousarray(rgb[:, :384])
    want = shrink(rgb, (out_hw[1], out_hw[0])).astype(np.int16)
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
    got_u8 = torch_ops.shrink(x, out_hw)[0].permute(1, 2, 0).numpy().astype(np.int16)
    got_f = torch_ops.shrink(x.float(), out_hw)[0].permute(1, 2, 0).numpy()   # the CUDA path's dtype
    assert got_u8.shape == want.shape
    assert np.abs(got_u8 - want).max() <= 2 and np.abs(got_f - want).max() <= 1
    assert np.abs(got_u8 - want).mean() < 0.4 and np.abs(got_f - want).mean() < 0.3


@pytest.mark.parametrize("src_wh, out_hw", [((1242, 375), (146, 482)), ((1241, 376), (175, 579)),
                                             ((641, 481), (233, 311)), ((385, 256), (60, 300)),
                                             ((383, 255), (101, 150))])
def test_torch_shrink_odd_and_fractional_sizes(src_wh: tuple[int, int], out_hw: tuple[int, int]) -> None:
    """Odd sides and fractional area factors (a KITTI-shaped 1242x375 frame for the shipped
    model, 641x481, an aspect change): INTER_AREA weights each input pixel by its overlap, and
    torch_ops.area does the same (adaptive pooling's equal-weight bins were up to 33 levels off)."""
    import cv2
    import torch

    from reflector_ros.backends import torch_ops
    from reflector_ros.core.preprocess import shrink

    rgb = cv2.cvtColor(cv2.imread(str(Path(__file__).parent / "data" / "chelsea.jpg")), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, src_wh, interpolation=cv2.INTER_CUBIC)
    want = shrink(rgb, (out_hw[1], out_hw[0])).astype(np.int16)
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
    for inp in (x, x.float()):
        got = torch_ops.shrink(inp, out_hw)[0].permute(1, 2, 0).numpy().astype(np.int16)
        assert np.abs(got - want).max() <= 2 and np.abs(got - want).mean() < 0.3


def test_torch_area_weights_fractional_overlaps() -> None:
    """Five pixels into two: each output covers 2.5 inputs, the middle one split in half."""
    import torch

    from reflector_ros.backends import torch_ops

    x = torch.tensor([[[[10, 20, 30, 40, 155]]]], dtype=torch.uint8)
    got = torch_ops.area(x, (1, 2))[0, 0, 0]
    assert got.tolist() == pytest.approx([(10 + 20 + 15) / 2.5, (15 + 40 + 155) / 2.5])


def test_torch_shrink_odd_sizes() -> None:
    """Sizes the network never gets but a caller might: one-pixel sides, one axis growing while
    the other shrinks; uint8 in, uint8 out, the requested size, no error."""
    import torch

    from reflector_ros.backends import torch_ops

    for src, dst in (((2, 2), (1, 1)), ((3, 3), (2, 2)), ((1, 1), (2, 2)), ((1, 5), (1, 3)), ((85, 384), (3, 500)),
                     ((256, 384), (1, 1)), ((7, 9), (3, 4))):
        x = torch.randint(0, 255, (1, 3, *src), dtype=torch.uint8)
        for inp in (x, x.float()):
            out = torch_ops.shrink(inp, dst)
            assert tuple(out.shape) == (1, 3, *dst) and out.dtype == inp.dtype
            assert float(out.float().min()) >= 0 and float(out.float().max()) <= 255


@pytest.mark.parametrize("out_hw", [(128, 160), (48, 60), (64, 80), (100, 130)])
@pytest.mark.parametrize("limits", [(0.0, float("inf"), 0.0, False), (1.0, 4.0, 0.3, True)])
def test_torch_finish_matches_core(out_hw: tuple[int, int], limits: tuple) -> None:
    """torch_ops.finish_depth (what CUDA and TensorRT run) is the bit-for-bit twin of the host's
    finalize_outputs + finalize_depth: the same NaN pixels, the same values, unseen included."""
    import torch

    from reflector_ros.backends import torch_ops
    from reflector_ros.core.depth import finalize_depth, finalize_outputs
    from reflector_ros.core.preprocess import resize_to

    rng = np.random.default_rng(0)
    net = rng.uniform(0.5, 5.0, (64, 80)).astype(np.float32)
    net[3, 4] = np.nan
    net[10, 10] = -1.0
    conf = rng.uniform(-0.2, 1.2, (64, 80)).astype(np.float32)
    lo, hi, min_conf, with_unseen = limits
    unseen = (rng.random(out_hw) < 0.1) if with_unseen else None
    validity = Validity(lo, hi, min_conf, unseen)
    d_t, c_t = torch_ops.finish_depth(torch_ops.resize_map(torch.from_numpy(net)[None, None], out_hw),
                                      torch_ops.resize_map(torch.from_numpy(conf), out_hw), validity,
                                      None if unseen is None else torch.from_numpy(unseen))
    d_np = resize_to(net, out_hw).astype(np.float32)
    c_np = resize_to(conf, out_hw).astype(np.float32)
    finalize_outputs(d_np, c_np, unseen)
    finalize_depth(d_np, c_np, validity, out=d_np)
    np.testing.assert_array_equal(np.isnan(d_t.numpy()), np.isnan(d_np))
    np.testing.assert_allclose(d_t.numpy(), d_np, rtol=1e-4, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(c_t.numpy(), c_np, atol=1e-4)
    assert not (d_t.numpy() == 0).any()
    if with_unseen:
        assert np.isnan(d_np[unseen]).all() and (c_np[unseen] == 0).all()
        assert 0 < np.isnan(d_np).mean() < 1


@pytest.mark.parametrize("stride,out_hw,rgb", [(1, (64, 80), True), (3, (64, 80), False), (2, (48, 60), True)])
def test_backend_cloud_matches_host_build(ort, torch_cpu, stride: int, out_hw: tuple[int, int], rgb: bool) -> None:
    """The device twin (torch_ops.build_cloud, what CUDA/TensorRT run) packs the same
    bytes as the host path on the same depth, straight into the caller's buffer."""
    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.core.depth import finalize_depth
    from reflector_ros.core.pointcloud import CloudSpec, build_cloud, ray_lengths, ray_table

    h, w = out_hw
    rays = ray_table(Intrinsics(fx=70.0, fy=72.0, cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h), stride)
    out = np.full((*rays.shape[:2], 4), 7.0, np.float32)
    frame = _frame(64, 80, seed=3)
    res0 = _run(torch_cpu, frame, 1.0, out_hw)
    d = res0.depth[np.isfinite(res0.depth)]
    lo, hi = np.quantile(d, [0.1, 0.9])                 # cut both tails so every filter bites
    validity = Validity(float(lo), float(hi), 0.01)
    spec = CloudSpec(rays, ray_lengths(rays), stride, float(np.quantile(d, 0.2)), float(np.quantile(d, 0.8) * 1.05),
                     0.02, rgb, out=out)
    host_spec = dataclasses.replace(spec, out=None)
    for backend in (torch_cpu, ort):
        res = _run(backend, frame, 1.0, out_hw, spec, validity)
        assert res.cloud is out                     # the one device-to-host copy landed in the caller's buffer
        got = res.cloud.copy()
        assert np.isnan(res.depth[(res0.depth < lo) | (res0.depth > hi)]).all()   # validity applied first
        host = build_cloud(finalize_depth(res.depth, res.confidence, validity), res.confidence, frame, host_spec)
        valid = ~np.isnan(got[..., 2])
        assert 0 < valid.sum() < valid.size
        if rgb and out_hw != frame.shape[:2]:   # colour resized on each side by a different resampler
            np.testing.assert_array_equal(got[..., :3].view(np.uint32), host[..., :3].view(np.uint32))
        else:
            np.testing.assert_array_equal(got.view(np.uint32), host.view(np.uint32))


def test_bad_cloud_spec_is_refused(torch_cpu) -> None:
    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.core.pointcloud import CloudSpec, ray_lengths, ray_table

    rays = ray_table(Intrinsics(fx=70.0, fy=72.0, cx=39.5, cy=31.5, width=80, height=64), 2)
    with pytest.raises(InputError, match="stride"):
        _run(torch_cpu, _frame(64, 80), 1.0, (64, 80), cloud=CloudSpec(rays, ray_lengths(rays), 1))
    with pytest.raises(InputError, match="cloud.out"):
        _run(torch_cpu, _frame(64, 80), 1.0, (64, 80), cloud=CloudSpec(rays, ray_lengths(rays), 2,
                                                                        out=np.empty((3, 3, 4), np.float32)))


# --- make_backend -----------------------------------------------------------------------

def test_auto_picks_onnxruntime_here_and_says_why(tiny_model_dir: Path) -> None:
    notes: list[str] = []
    b = make_backend("auto", tiny_model_dir / "tiny.onnx", num_threads=1, logger=notes.append)
    assert b.name == "onnxruntime-cpu"
    low = b.reason.lower()
    assert "tensorrt" in low and "cuda" in low and "onnxruntime-cpu" in low
    assert notes and b.reason in notes[0]


def test_unknown_backend_name() -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrtx'.*onnxruntime"):
        make_backend("tensorrtx")


@pytest.mark.parametrize("name", ["onnxruntime", "torch-cpu", "auto"])
def test_missing_model_file(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        make_backend(name, missing)


def test_corrupt_onnx_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="garbage.onnx.*not a loadable ONNX model"):
        make_backend("onnxruntime", bad)


def test_onnx_without_metadata_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_model_dir / "tiny.onnx"))
    del model.metadata_props[:]
    stripped = tmp_path / "nometa.onnx"
    onnx.save(model, str(stripped))
    with pytest.raises(ValueError, match="nometa.onnx.*metadata"):
        make_backend("onnxruntime", stripped)


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x80\x02not a checkpoint" * 50)
    with pytest.raises(ValueError, match="broken.pt"):
        make_backend("torch-cpu", bad)


def test_missing_pair_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone.onnx"
    lone.write_bytes((tiny_model_dir / "tiny.onnx").read_bytes())
    with pytest.raises(FileNotFoundError, match="lone_backbone.onnx"):
        make_backend("onnxruntime", lone, use_pair=True)


@pytest.mark.parametrize("which", ["ort", "torch_cpu"])
def test_bad_run_arguments(which: str, request) -> None:
    b = request.getfixturevalue(which)
    good = _frame(64, 80)
    with pytest.raises(InputError, match="uint8"):
        _run(b, good.astype(np.float32), 1.0, (64, 80))
    with pytest.raises(InputError, match="focal scale"):
        _run(b, good, float("nan"), (64, 80))
    with pytest.raises(InputError, match="network input"):
        _run(b, good, 1.0, (64, 80), net_hw=(0, 80))
    with pytest.raises(InputError, match="output"):
        _run(b, good, 1.0, (100000, 80))
    with pytest.raises(InputError, match="unseen"):
        _run(b, good, 1.0, (64, 80), validity=Validity(unseen=np.zeros((3, 3), bool)))
    with pytest.raises(InputError, match="depth scale"):
        b.finish(b.infer(good, NetInput(64, 80, 1.0)), (64, 80), Validity(), float("inf"))
    assert np.isfinite(_run(b, good, 1.0, (64, 80)).depth).all()  # still serving


def test_cpu_path_never_imports_torch(tiny_model_dir: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from reflector_ros.backends import make_backend
        from reflector_ros.core.camera import Intrinsics
        from reflector_ros.pipeline import DepthPipeline, FrameSettings
        for name in ("onnxruntime", "auto"):
            b = make_backend(name, {str(tiny_model_dir / 'tiny.onnx')!r}, num_threads=1)
            r = DepthPipeline(b).process(np.zeros((48, 64, 3), np.uint8), Intrinsics(50., 50., 31.5, 23.5, 64, 48),
                                         FrameSettings())
            assert r.depth.shape == (48, 64), r.depth.shape
        print("torch" in sys.modules, b.name)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "onnxruntime-cpu"], proc.stdout + proc.stderr


# --- INT8 calibration feed (the part that needs no TensorRT) ------------------------

def test_calibration_batches_from_folder(tmp_path: Path, ort) -> None:
    import cv2

    from reflector_ros.backends.calibration import calibration_batches, spread
    from reflector_ros.core.preprocess import preprocess

    folder = tmp_path / "calib"
    (folder / "sub").mkdir(parents=True)
    frames = [_frame(48 + 8 * i, 64 + 8 * i, seed=i) for i in range(5)]
    for i, rgb in enumerate(frames):
        where = folder / "sub" if i % 2 else folder
        assert cv2.imwrite(str(where / f"f{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (folder / "f9_corrupt.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")

    got = list(calibration_batches(folder, ort.meta, frames=10))
    assert len(got) == 5  # the corrupt file is skipped, text ignored
    for b in got:
        assert b.shape == (1, 3, 64, 80) and b.dtype == np.float32 and b.flags.c_contiguous
    by_name = sorted(folder.rglob("f[0-4].png"))
    ref = cv2.cvtColor(cv2.imread(str(by_name[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got[0], preprocess(ref, ort.meta, NetInput(64, 80, 1.0)))

    three = list(calibration_batches(folder, ort.meta, frames=3))
    assert len(three) == 3
    assert spread(10, 3) == [0, 4, 9] and spread(3, 10) == [0, 1, 2] and spread(0, 4) == []


def test_calibration_refusals(tmp_path: Path, ort) -> None:
    from reflector_ros.backends.calibration import calibration_batches

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list(calibration_batches(tmp_path / "empty", ort.meta, 4))
    with pytest.raises(InputError, match="not found"):
        list(calibration_batches(tmp_path / "missing", ort.meta, 4))
    with pytest.raises(InputError, match="> 0"):
        list(calibration_batches(tmp_path / "empty", ort.meta, 0))


# --- CLIs -------------------------------------------------------------------------------

def test_bench_cli_json(tiny_model_dir: Path) -> None:
    import json

    proc = subprocess.run([sys.executable, "-m", "reflector_ros.cli", "bench", "--model",
                           str(tiny_model_dir / "tiny.onnx"), "--backends", "onnxruntime-cpu", "tensorrt",
                           "--reps", "3", "--warmup", "1", "--threads", "1", "--size", "160", "120", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    (row,) = out["results"]
    assert row["backend"] == "onnxruntime-cpu" and row["input_hw"] == [64, 80] and row["frame_wh"] == [160, 120]
    assert row["model"].endswith("tiny.onnx") and row["fx"] == 0.9 * 160
    assert row["total_ms"] > 0 and row["inference_ms"] > 0 and 0 < row["inference_share"] <= 1
    assert "tensorrt" in out["skipped"]


def test_bench_cli_table_and_bad_options(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two models side by side: named by file, and the ratio said as "A takes Nx the time of B";
    bad options are one-line errors before any model is loaded."""
    import shutil

    other = tmp_path / "other.onnx"
    shutil.copy(tiny_model_dir / "tiny.onnx", other)
    base = [sys.executable, "-m", "reflector_ros.cli", "bench", "--backends", "onnxruntime-cpu", "--reps", "3",
            "--warmup", "1", "--threads", "1", "--size", "160", "120"]
    proc = subprocess.run([*base, "--model", str(tiny_model_dir / "tiny.onnx"), "--model", str(other)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\ntiny.onnx " in proc.stdout and "\nother.onnx " in proc.stdout, proc.stdout
    assert "tiny.onnx (onnxruntime-cpu) takes " in proc.stdout and "x the time per frame of other.onnx" in proc.stdout
    for extra, said in ((["--fx", "-100"], "not a usable focal length"), (["--fx", "0"], "not a usable focal length"),
                        (["--threads", "-3"], "--threads must be >= 0"),
                        (["--model", str(tmp_path / "none.onnx")], "none.onnx: no such file"),
                        (["--size", "0", "0"], "--size 0 0")):
        proc = subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, (extra, proc.stderr)


def test_build_engine_cli_without_tensorrt(tiny_model_dir: Path) -> None:
    from reflector_ros.backends import trt_runtime_version

    try:
        trt_runtime_version()
        pytest.skip("TensorRT is installed here; this checks the message where it is not")
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, "-m", "reflector_ros.cli", "build-engine", "--onnx",
                           str(tiny_model_dir / "tiny.onnx")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "TensorRT is not usable here" in proc.stderr and "Traceback" not in proc.stderr
