"""ONNX export: names, TensorRT-parsable operators, metadata, torch vs ONNX Runtime parity, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from reflector_ros.cli import main as cli_main
from reflector_ros.meta import ModelMeta
from reflector_ros.model.export import export_onnx
from reflector_ros.model.reflector import build_model, load_checkpoint

torch.set_num_threads(1)  # 2 OpenMP threads on a shared 2-core VM mostly wait for each other

# Operators both TensorRT 8.5 and 10.x parse (Identity: a no-op the exporter leaves around
# folded BatchNorm weights; Cast: the int64 shape -> Resize sizes of graphs whose sizes are read
# from the input, as canonical-camera models need). Nothing data-dependent: no TopK/Sort/NonZero/Loop.
ALLOWED = {
    "Conv", "ConvTranspose", "Relu", "Clip", "Sigmoid", "Softplus", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt",
    "Exp", "Log", "MatMul", "Gemm", "Reshape", "Transpose", "Concat", "Slice", "Gather", "Unsqueeze", "Squeeze",
    "Shape", "Constant", "ReduceMean", "ReduceSum", "ReduceMax", "Softmax", "Resize", "BatchNormalization",
    "GlobalAveragePool", "AveragePool", "MaxPool", "CumSum", "Erf", "Tanh", "Identity", "Cast",
}


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _image(meta: ModelMeta, hololens: Path | None = None, seed: int = 0) -> np.ndarray:
    """A normalised NCHW input: a real frame when the shared data is present, else structured noise."""
    if hololens is not None:
        frame = json.loads((hololens / "manifest.json").read_text())["frames"][seed]
        rgb = cv2.cvtColor(cv2.imread(str(hololens / frame["rgb"])), cv2.COLOR_BGR2RGB)
    else:
        g = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:120, 0:160]
        rgb = (np.stack([xx, yy, xx + yy], -1) + g.integers(0, 60, (120, 160, 3))).clip(0, 255).astype(np.uint8)
    rgb = cv2.resize(rgb, (meta.input_width, meta.input_height), interpolation=cv2.INTER_AREA)
    x = (rgb.astype(np.float32) / 255 - np.array(meta.mean, np.float32)) / np.array(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))


def test_files_names_and_shapes(tiny_model_dir: Path) -> None:
    _, meta, _ = load_checkpoint(tiny_model_dir / "tiny.pt")
    h, w = meta.input_height, meta.input_width
    expect = {
        "tiny.onnx": (["image", "focal_scale"], ["depth", "confidence", "rel_depth"]),
        "tiny_backbone.onnx": (["image"], ["rel_depth", "feat0", "feat1", "feat2", "feat3"]),
        "tiny_reflector.onnx": (["image", "rel_depth", "feat0", "feat1", "feat2", "feat3", "focal_scale"],
                                ["depth", "confidence"]),
    }
    for name, (inputs, outputs) in expect.items():
        s = _session(tiny_model_dir / name)
        assert [i.name for i in s.get_inputs()] == inputs
        assert [o.name for o in s.get_outputs()] == outputs
        shapes = {i.name: i.shape for i in s.get_inputs()} | {o.name: o.shape for o in s.get_outputs()}
        assert shapes["image"] == [1, 3, h, w] if "image" in shapes else True
        for key in ("depth", "confidence", "rel_depth"):
            if key in shapes:
                assert shapes[key] == [1, 1, h, w], (name, key, shapes[key])
        if "focal_scale" in shapes:
            assert shapes["focal_scale"] == [1]
        assert onnx.load(str(tiny_model_dir / name)).opset_import[0].version == 17
    fb = {o.name: o.shape for o in _session(tiny_model_dir / "tiny_backbone.onnx").get_outputs()}
    assert fb["feat0"][2:] == [-(-h // 32), -(-w // 32)] and fb["feat3"][2:] == [h // 4, w // 4]


def test_metadata_round_trip(tiny_model_dir: Path) -> None:
    _, meta, _ = load_checkpoint(tiny_model_dir / "tiny.pt")
    assert meta.input_height == 64 and meta.input_width == 80 and meta.n_bins == 16
    for name in ("tiny.onnx", "tiny_backbone.onnx", "tiny_reflector.onnx"):
        props = {p.key: p.value for p in onnx.load(str(tiny_model_dir / name)).metadata_props}
        assert ModelMeta.from_props(props) == meta
        assert ModelMeta.from_props(_session(tiny_model_dir / name).get_modelmeta().custom_metadata_map) == meta


def test_operator_allow_list(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Every node of every graph, small, base and head, is one TensorRT 8.5 and 10 parse."""
    paths = [tiny_model_dir / n for n in ("tiny.onnx", "tiny_backbone.onnx", "tiny_reflector.onnx")]
    for arch in ("base", "head"):
        torch.manual_seed(0)
        meta = ModelMeta(arch=arch, input_height=64, input_width=80, n_bins=16)
        model = build_model(meta).eval()
        exported = export_onnx(model, meta, tmp_path, arch)
        paths += exported.values()
        if arch == "base":  # the transformer graph computes what torch computes
            x = _image(meta)
            with torch.no_grad():
                ref = model(torch.from_numpy(x), torch.ones(1))["depth"].numpy()
            got = _session(exported["fused"]).run(["depth"], {"image": x, "focal_scale": np.ones(1, np.float32)})[0]
            assert _rel_err(ref, got) <= 1e-4
    for path in paths:
        bad = _ops(path) - ALLOWED
        assert not bad, f"{path.name} uses {sorted(bad)}"
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)


@pytest.mark.parametrize("source", ["synthetic", "hololens"])
def test_parity_fused_and_pair(tiny_model_dir: Path, request: pytest.FixtureRequest, source: str) -> None:
    hololens = request.getfixturevalue("hololens_dir") if source == "hololens" else None
    model, meta, _ = load_checkpoint(tiny_model_dir / "tiny.pt")
    fused = _session(tiny_model_dir / "tiny.onnx")
    backbone = _session(tiny_model_dir / "tiny_backbone.onnx")
    reflector = _session(tiny_model_dir / "tiny_reflector.onnx")
    for seed, scale in [(0, 1.0), (1, 1.83)]:
        x = _image(meta, hololens, seed)
        fs = np.array([scale], np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x), torch.from_numpy(fs))
        depth, conf, rel = fused.run(None, {"image": x, "focal_scale": fs})
        for name, got in (("depth", depth), ("confidence", conf), ("rel_depth", rel)):
            assert _rel_err(ref[name].numpy(), got) <= 1e-4, (name, _rel_err(ref[name].numpy(), got))
        outs = backbone.run(None, {"image": x})
        feeds = dict(zip(["rel_depth", "feat0", "feat1", "feat2", "feat3"], outs))
        pdepth, pconf = reflector.run(None, {"image": x, **feeds, "focal_scale": fs})
        assert _rel_err(ref["depth"].numpy(), pdepth) <= 1e-4
        assert _rel_err(ref["confidence"].numpy(), pconf) <= 1e-4
        assert depth.std() > 0 and np.isfinite(depth).all()


def test_head_arch_exports_one_graph_with_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    meta = ModelMeta(arch="head", input_height=64, input_width=80, n_bins=16)
    model = build_model(meta).eval()
    paths = export_onnx(model, meta, tmp_path, "h")
    assert set(paths) == {"reflector"} and not (tmp_path / "h.onnx").exists()
    s = _session(paths["reflector"])
    assert [i.name for i in s.get_inputs()] == ["image", "rel_depth", "focal_scale"]
    x = _image(meta)
    rel = np.random.default_rng(0).random((1, 1, 64, 80), dtype=np.float32) + 0.1
    fs = np.array([0.7], np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(fs), torch.from_numpy(rel))
    depth, conf = s.run(None, {"image": x, "rel_depth": rel, "focal_scale": fs})
    assert _rel_err(ref["depth"].numpy(), depth) <= 1e-4
    assert _rel_err(ref["confidence"].numpy(), conf) <= 1e-4


def test_export_cli(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["export", "--checkpoint", str(tiny_model_dir / "tiny.pt"), "--output", str(tmp_path),
                     "--stem", "cli"]) == 0
    for name in ("cli.onnx", "cli_backbone.onnx", "cli_reflector.onnx"):
        assert (tmp_path / name).stat().st_size > 10_000
    # same weights, same graph: identical outputs to the fixture's export
    x = _image(ModelMeta(input_height=64, input_width=80))
    feeds = {"image": x, "focal_scale": np.ones(1, np.float32)}
    a = _session(tmp_path / "cli.onnx").run(["depth"], feeds)[0]
    b = _session(tiny_model_dir / "tiny.onnx").run(["depth"], feeds)[0]
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # the weights alone beside the graphs: a torch backend runs them like the ONNX graph
    from reflector_ros.backends import make_backend
    from reflector_ros.backends.base import run as run_backend
    from reflector_ros.meta import NetInput

    assert (tmp_path / "cli.pt").is_file()
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    by_pt = run_backend(make_backend("torch-cpu", tmp_path / "cli.onnx"), rgb, NetInput(64, 80, 1.0), (64, 80))
    by_onnx = run_backend(make_backend("onnxruntime", tmp_path / "cli.onnx"), rgb, NetInput(64, 80, 1.0), (64, 80))
    np.testing.assert_allclose(by_pt.depth, by_onnx.depth, rtol=1e-4, atol=1e-5)
    capsys.readouterr()
    for content, said in ((b"\x00" * 100, "not a torch checkpoint"), (b"model: 1\nmeta: 2\n", "not a torch checkpoint"),
                          ((tmp_path / "cli.onnx").read_bytes(), "not a torch checkpoint"),
                          ((tmp_path / "cli.pt").read_bytes()[:5000], "not a readable Reflector checkpoint")):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(content)
        assert cli_main(["export", "--checkpoint", str(bad), "--output", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert cli_main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--output", str(tmp_path)]) == 2
    # a training checkpoint under the weights file's name is refused (nothing written), an earlier export's replaced
    import torch

    training = tmp_path / "run"
    training.mkdir()
    torch.save({**torch.load(tiny_model_dir / "tiny.pt", weights_only=True), "step": 7}, training / "best.pt")
    before = (training / "best.pt").read_bytes()
    assert cli_main(["export", "--checkpoint", str(tiny_model_dir / "tiny.pt"), "--output", str(training),
                     "--stem", "best"]) == 2
    assert (training / "best.pt").read_bytes() == before and "is not an earlier export" in capsys.readouterr().err
    assert not (training / "best.onnx").exists()
    old = (tmp_path / "cli.pt").stat().st_mtime_ns
    assert cli_main(["export", "--checkpoint", str(tiny_model_dir / "tiny.pt"), "--output", str(tmp_path),
                     "--stem", "cli"]) == 0
    assert (tmp_path / "cli.pt").stat().st_mtime_ns != old


def test_canonical_model_exports_with_the_input_size_free(tmp_path: Path) -> None:
    """A canonical-camera model's input size follows the camera: its fused graph and its pair
    take any size and agree with torch at each (the sizes below are what cameras give)."""
    from reflector_ros.meta import ModelMeta
    from reflector_ros.model.export import export_onnx
    from reflector_ros.model.reflector import build_model

    torch.manual_seed(0)
    meta = ModelMeta(arch="lite0", input_height=64, input_width=80, n_bins=16, input_mode="canonical",
                     focal_canonical=60.0)
    model = build_model(meta).eval()
    paths = export_onnx(model, meta, tmp_path, "canon")
    fused, backbone, reflector = (_session(paths[k]) for k in ("fused", "backbone", "reflector"))
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(paths["fused"])).graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == [1, 3] and all(isinstance(d, str) for d in dims[2:]), dims
    for hw in ((64, 80), (50, 77), (96, 128)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            ref = model(x, torch.ones(1))["depth"].numpy()
        got = fused.run(["depth"], {"image": x.numpy(), "focal_scale": np.ones(1, np.float32)})[0]
        assert got.shape == (1, 1, *hw) and _rel_err(ref, got) <= 1e-3, hw
        feats = dict(zip([o.name for o in backbone.get_outputs()], backbone.run(None, {"image": x.numpy()})))
        feed = {**feats, "image": x.numpy(), "focal_scale": np.ones(1, np.float32)}
        names = {i.name for i in reflector.get_inputs()}
        pair = reflector.run(["depth"], {k: v for k, v in feed.items() if k in names})[0]
        assert _rel_err(got, pair) <= 1e-5, hw


def test_learned_confidence_exports_with_parity_and_allowed_ops(tmp_path: Path) -> None:
    """The error head (confidence: learned) exports into every graph with ops TensorRT
    parses, its pixel grid follows the input size, and ONNX Runtime matches torch."""
    from reflector_ros.meta import ModelMeta
    from reflector_ros.model.export import export_onnx
    from reflector_ros.model.reflector import build_model

    torch.manual_seed(0)
    meta = ModelMeta(arch="lite0", input_height=64, input_width=80, n_bins=16, input_mode="canonical",
                     focal_canonical=60.0, confidence="learned")
    model = build_model(meta).eval()
    for p in model.head.error.parameters():  # a trained head is not flat: make this one vary
        torch.nn.init.normal_(p, std=0.1)
    paths = export_onnx(model, meta, tmp_path, "learned")
    for path in paths.values():
        assert not _ops(path) - ALLOWED, f"{path.name} uses {sorted(_ops(path) - ALLOWED)}"
    fused = _session(paths["fused"])
    for hw in ((64, 80), (50, 77)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            ref = model(x, torch.ones(1))["confidence"].numpy()
        got = fused.run(["confidence"], {"image": x.numpy(), "focal_scale": np.ones(1, np.float32)})[0]
        assert got.shape == (1, 1, *hw) and float(np.ptp(got)) > 0.01
        assert _rel_err(ref, got) <= 1e-4, hw
