"""`reflector demo` end to end: it starts the real node in a subprocess, publishes a manifest
over DDS, and its printed AbsRel and delta1 are the ones `reflector eval` computes on the same
frames with the same model."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reflector_ros.cli import main
from ros_helpers import REPO, node_env


def test_demo_prints_reflector_evals_metrics(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "frames"
    assert main(["synth", "--out", str(data), "--count", "4", "--height", "96", "--width", "128",
                 "--workers", "1", "--preview", "0"]) == 0
    model = tiny_model_dir / "tiny.onnx"
    preview = tmp_path / "preview.png"
    proc = subprocess.run([sys.executable, "-m", "reflector_ros.cli", "demo", "--data", str(data), "--frames", "4",
                           "--rate", "4", "--model", str(model), "--backend", "onnxruntime", "--out", str(preview)],
                          cwd=REPO, env=node_env(), capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    found = re.search(r"over (\d+) frames \(reflector eval's metrics\): AbsRel ([\d.]+), delta1 ([\d.]+)", out)
    assert found, out
    assert int(found.group(1)) == 4, out         # every frame answered and scored
    assert preview.is_file()

    js = tmp_path / "eval.json"
    assert main(["eval", "--model", str(model), "--backend", "onnxruntime", "--data", f"manifest:{data}",
                 "--json", str(js)]) == 0
    metric = json.loads(js.read_text())["sets"][f"manifest:{data}"]["metric"]
    assert metric["n"] == 4
    assert found.group(2) == f"{metric['abs_rel']:.3f}"
    assert found.group(3) == f"{metric['d1']:.3f}"
    assert f"reflector eval --model {model} --data 'manifest:{data.resolve()}?frames=0:4'" in out


@pytest.mark.parametrize("args, said", [(["--frames", "0"], "--frames must be in"),
                                        (["--rate", "0"], "--rate must be in"),
                                        (["--data", "/nonexistent"], "no manifest.json there")])
def test_demo_refuses_bad_options(args: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *args]) == 2
    assert said in capsys.readouterr().err
