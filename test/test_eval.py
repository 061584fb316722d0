"""`reflector eval` on a manifest the test renders; baselines; the focal-consistency check; per-group tables.

The shipped model's own figures are checked in test_model_targets.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reflector_ros.cli import main
from reflector_ros.train.evaluate import focal_consistency


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evalset")
    assert main(["synth", "--out", str(out), "--count", "4", "--height", "60", "--width", "80",
                 "--workers", "1", "--preview", "0"]) == 0
    return out


def test_eval_cli_model_json(tmp_path: Path, manifest: Path, tiny_model_dir: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    rc = main(["eval", "--model", str(tiny_model_dir / "tiny.onnx"), "--backend", "onnxruntime",
               "--data", f"manifest:{manifest}", "--frames", "1:4", "--median-scale", "--flip",
               "--focal-check", "2", "--json", str(js), "--markdown", str(md)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| AbsRel |" in printed and "(median-scaled)" in printed and "focal consistency" in printed
    res = json.loads(js.read_text())
    entry = res["sets"][f"manifest:{manifest} [1:4]"]
    assert entry["metric"]["n"] == 3 and entry["crop"] == "none" and entry["max_depth"] == 10.0
    for k in ("abs_rel", "rmse", "d1", "silog"):
        assert np.isfinite(entry["metric"][k])
    # median scaling can only help a per-image scale error, never hurt AbsRel much
    assert entry["median_scaled"]["abs_rel"] <= entry["metric"]["abs_rel"] + 0.05
    assert 0 < entry["focal_ratio_median"] < 10
    assert md.read_text().startswith("| set |")


def test_eval_baselines_match_direct_computation(manifest: Path, capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    from reflector_ros.data.registry import open_dataset
    from reflector_ros.train.metrics import valid_mask

    js = tmp_path / "b.json"
    assert main(["eval", "--data", f"manifest:{manifest}", "--baseline", "constant", "--constant-depth", "3",
                 "--json", str(js)]) == 0
    got = json.loads(js.read_text())["sets"][f"manifest:{manifest}"]["metric"]["abs_rel"]
    want = []
    for s in open_dataset(f"manifest:{manifest}"):
        g = s.depth[valid_mask(s.depth, max_depth=10.0)]
        want.append(np.mean(np.abs(g - 3.0) / g))
    assert got == pytest.approx(float(np.mean(want)), rel=1e-6)
    assert main(["eval", "--data", f"manifest:{manifest}", "--baseline", "median-gt"]) == 0
    assert "median GT (oracle)" in capsys.readouterr().out


@pytest.mark.parametrize("args, msg", [
    (["--data", "nosuchtype:/x"], "unknown dataset type"),
    (["--data", "manifest:/nonexistent/dir", "--baseline", "constant"], "/nonexistent/dir"),
    (["--data", "manifest:{m}?frames=0:2", "--frames", "0:1", "--baseline", "constant"], "use one"),
    (["--data", "manifest:{m}", "--frames", "9:20", "--baseline", "constant"], "9 is out of range for 4 frames"),
    (["--data", "manifest:{m}", "--frames", "2:6", "--baseline", "constant"], "6 is out of range for 4 frames"),
    (["--data", "manifest:{m}?frames=2:6", "--baseline", "constant"], "6 is out of range for 4 frames"),
    (["--data", "manifest:{m}", "--frames", "3:1", "--baseline", "constant"], "selects no frame"),
    (["--data", "manifest:{m}", "--max-depth", "0", "--baseline", "constant"], "--max-depth must be"),
    (["--data", "manifest:{m}", "--min-depth", "nan", "--baseline", "constant"], "--min-depth must be"),
    (["--data", "manifest:{m}", "--baseline", "constant", "--constant-depth", "0"], "--constant-depth must be"),
    (["--data", "manifest:{m}", "--baseline", "constant", "--limit", "-1"], "--limit must be >= 0"),
    (["--data", "manifest:{m}", "--baseline", "constant", "--groups", "a"], "add --by-group"),
    (["--data", "manifest:{m}", "--baseline", "constant", "--json", "{m}"], "is a folder"),
    (["--data", "manifest:{m}", "--baseline", "constant", "--json", "{m}/new/"], "is a folder"),
    (["--data", "manifest:{m}", "--baseline", "constant", "--json", "/proc/version/r.json"], "cannot"),
    (["--data", "manifest:{m}", "--baseline", "constant", "--min-depth", "50", "--max-depth", "60"],
     "none of the 4 frames has ground-truth depth in [50, 60] m"),
    (["--data", "bag:/nonexistent.mcap?image=/a", "--baseline", "constant"], "not found"),
    (["--data", "bag:{m}/manifest.json?image=/a", "--baseline", "constant"], "needs info=CAMERA_INFO_TOPIC"),
])
def test_eval_bad_inputs(args: list[str], msg: str, manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", *[a.replace("{m}", str(manifest)) for a in args]]) == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "infer", "demo"])
def test_a_second_model_is_refused_not_silently_replacing_the_first(command: str, manifest: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Two --model options used to evaluate only the last one, printed as if it were both."""
    args = {"eval": ["--data", f"manifest:{manifest}"], "infer": [str(manifest)], "demo": []}[command]
    with pytest.raises(SystemExit) as exc:
        main([command, *args, "--model", "a.onnx", "--model", "b.onnx"])
    assert exc.value.code == 2 and "--model given twice" in capsys.readouterr().err


def test_focal_consistency_function_on_a_pure_scaling_model() -> None:
    """A model that ignores the image and returns focal_scale x constant doubles under 2x zoom;
    one that returns a fixed metric depth is perfectly consistent."""
    from reflector_ros.core.camera import Intrinsics

    rgb = np.zeros((48, 64, 3), np.uint8)
    cam = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)
    assert focal_consistency(lambda im, c: np.full(im.shape[:2], c.fx / 100.0), rgb, cam) == pytest.approx(2.0)
    assert focal_consistency(lambda im, c: np.full(im.shape[:2], 3.0), rgb, cam) == pytest.approx(1.0)


def test_eval_by_group_and_the_scale_statistics(tmp_path: Path, manifest: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Frames carry a group (real_eval's places): one row per group, a mean over groups in which
    every group weighs the same, and the per-frame scale median(pred)/median(gt)."""
    from reflector_ros.train.evaluate import scale_stats

    grouped = tmp_path / "grouped"
    grouped.mkdir()
    doc = json.loads((manifest / "manifest.json").read_text())
    for i, fr in enumerate(doc["frames"]):
        fr["group"] = "a" if i == 0 else "b"            # 1 frame in a, 3 in b
        for key in ("rgb", "depth"):
            fr[key] = str((manifest / fr[key]).resolve())
    (grouped / "manifest.json").write_text(json.dumps(doc))
    js = tmp_path / "g.json"
    assert main(["eval", "--data", f"manifest:{grouped}", "--baseline", "constant", "--constant-depth", "2",
                 "--by-group", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "| a | 1 |" in out and "| b | 3 |" in out and "| mean of 2 groups | 4 |" in out
    entry = json.loads(js.read_text())["sets"][f"manifest:{grouped}"]
    a, b = entry["groups"]["a"]["metric"]["abs_rel"], entry["groups"]["b"]["metric"]["abs_rel"]
    assert entry["mean_of_groups"]["abs_rel"] == pytest.approx((a + b) / 2)
    assert main(["eval", "--data", f"manifest:{grouped}", "--baseline", "constant", "--by-group",
                 "--groups", "b,c"]) == 2
    assert "no frames in group(s) ['c']" in capsys.readouterr().err
    # --groups picks its frames before --limit spreads over them (--limit 1 of all 4 frames is frame 0, in 'a')
    assert main(["eval", "--data", f"manifest:{grouped}", "--baseline", "constant", "--by-group",
                 "--groups", "b", "--limit", "1", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["sets"][f"manifest:{grouped}"]["groups"]["b"]["metric"]["n"] == 1
    st = scale_stats([1.0, 1.1, 1.21, 1.331, 1.21])            # +10 % each frame, then -10 %
    assert st["median"] == pytest.approx(1.21) and st["frame_to_frame"] == pytest.approx(0.1, abs=1e-9)


def test_eval_writes_results_into_a_new_folder_and_backend_errors_are_messages(
        tmp_path: Path, manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json into a folder that does not exist yet: made before the evaluation runs, so a
    long run's results are not lost at the end; a backend that cannot start is one line."""
    import torch

    js = tmp_path / "new" / "deeper" / "r.json"
    assert main(["eval", "--data", f"manifest:{manifest}", "--baseline", "constant", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["model"] == "constant 2.5 m"
    if not torch.cuda.is_available():
        assert main(["eval", "--data", f"manifest:{manifest}", "--backend", "torch-cuda"]) == 2
        assert "backend 'torch-cuda' cannot start here" in capsys.readouterr().err


def test_unknown_command_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evall"]) == 2
    assert "unknown command 'evall'" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("reflector_ros ")
