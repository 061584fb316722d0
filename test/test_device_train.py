"""tools/device_train.py: the one prepared GPU run, checked end to end at toy sizes on the CPU.

`prepare` must hand training exactly the frames it would have made itself (network scale,
intrinsics with the pixels, depth values untouched) in a folder small enough to travel;
`run --smoke` goes through rendering, training from the shipped model, evaluation and the
collection of results, and must leave at most the 8 files the device returns.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reflector_ros.cli import main
from reflector_ros.data.manifest import ManifestDataset
from reflector_ros.meta import network_input
from reflector_ros.model.reflector import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "device_train.py"
SHIPPED = REPO / "reflector_ros" / "weights" / "reflector_small.pt"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("src")
    assert main(["synth", "--out", str(out), "--count", "7", "--height", "90", "--width", "120",
                 "--workers", "1", "--preview", "0", "--trajectory"]) == 0     # with poses.txt
    return out


@pytest.fixture(scope="module")
def prepared(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("dev") / "hololens"
    r = subprocess.run([sys.executable, str(TOOL), "prepare", "--src", str(source), "--dest", str(dest),
                        "--train", "0:4", "--val", "4:7:2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "outside the repository" in r.stdout        # a tmp folder would not travel: it says so
    return dest


def test_prepare_writes_the_frames_training_would_make(source: Path, prepared: Path) -> None:
    _, meta, _ = load_checkpoint(SHIPPED)
    split = json.loads((prepared / "split.json").read_text())
    assert split["train"] == "0:4" and split["val"] == "4:6"
    src, dst = ManifestDataset(source), ManifestDataset(prepared)
    assert len(dst) == 6
    poses_src = (source / "poses.txt").read_text().splitlines()
    poses_dst = (prepared / "poses.txt").read_text().splitlines()
    for j, i in enumerate([0, 1, 2, 3, 4, 6]):
        a, b = src[i], dst[j]
        net = network_input(a.camera, meta)
        assert b.depth.shape == (net.height, net.width)
        assert b.depth.shape != a.depth.shape                   # it really was resized
        # intrinsics went with the pixels: the canonical focal length (within the size rounding)
        assert abs(b.camera.fx / meta.focal_canonical - 1) < 0.02, b.camera
        assert abs(b.camera.cx - ((a.camera.cx + 0.5) * net.width / a.camera.width - 0.5)) < 1e-3
        # nearest neighbour: every depth in the copy is one of the source's (to the PNG's mm)
        got = np.unique(np.round(b.depth[b.depth > 0] * 1000))
        had = np.unique(np.round(a.depth[a.depth > 0] * 1000))
        assert np.isin(got, had).all()
        assert poses_dst[j] == poses_src[i]
        # colour: the area-averaged frame, within the JPEG round trip
        assert np.abs(b.image.astype(int).mean() - a.image.astype(int).mean()) < 3


def test_prepare_counts_what_travels_and_refuses_too_much(source: Path) -> None:
    """Inside the repository the frames count with everything else that travels: a limit just
    above the rest is exceeded by the frames alone; a roomy one is not."""
    import os
    import shutil

    sys.path.insert(0, str(REPO / "tools"))
    from device_train import folder_bytes, travel_bytes

    carried = REPO / ".device"
    dest = carried / f"pytest_{os.getpid()}"
    rest = travel_bytes() + (folder_bytes(carried) if carried.exists() else 0)
    try:
        for limit_mib, code in ((rest / 2**20 + 0.001, 1), (rest / 2**20 + 100, 0)):
            r = subprocess.run([sys.executable, str(TOOL), "prepare", "--src", str(source), "--dest", str(dest),
                                "--train", "0:3", "--val", "3:5"], capture_output=True, text=True, timeout=300,
                               env={**os.environ, "REFLECTOR_DEVICE_LIMIT_MIB": str(limit_mib)})
            assert r.returncode == code, r.stdout + r.stderr
            assert ("too large to travel" in r.stdout) == (code == 1)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_prepare_never_replaces_what_it_did_not_make(source: Path, tmp_path: Path) -> None:
    for dest in (source, source / "sub", source.parent):
        r = subprocess.run([sys.executable, str(TOOL), "prepare", "--src", str(source), "--dest", str(dest)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "overlaps" in r.stderr, r.stdout + r.stderr
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    r = subprocess.run([sys.executable, str(TOOL), "prepare", "--src", str(source), "--dest", str(other)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "not replacing" in r.stderr
    assert (other / "notes.txt").read_text() == "keep me"
    assert (source / "manifest.json").exists()
    r = subprocess.run([sys.executable, str(TOOL), "prepare", "--src", str(source), "--dest", str(tmp_path / "d"),
                        "--train", "abc"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "frames 'abc'" in r.stderr and "Traceback" not in r.stderr


def test_smoke_run_trains_evaluates_and_collects_at_most_eight_files(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "OUT"
    r = subprocess.run([sys.executable, str(TOOL), "run", "--smoke", "--data", str(prepared), "--out", str(out),
                        "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["best.pt", "eval.json", "latest.pt", "learning_curves.png", "log.txt", "metrics.jsonl",
                     "summary.json"]
    for name in ("best.pt", "latest.pt"):
        ck = torch.load(out / name, weights_only=True)
        assert set(ck) == {"model", "meta"}                      # weights only: no optimiser state
        assert (out / name).stat().st_size < 16 * 2**20          # the device returns files up to 16 MB
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["gpu"] is None
    ev = json.loads((out / "eval.json").read_text())
    (res,) = ev["sets"].values()
    assert res["metric"]["n"] == 2 and 0 < res["metric"]["abs_rel"] < 1
    assert "done: step 3" in (out / "log.txt").read_text()
    assert summary["training_error"] is None

    # a retry into the same scratch folder whose training fails at once: exit 1, the failure
    # in the summary, and none of the earlier run's checkpoints passed off as this one's
    out2 = tmp_path / "OUT2"
    r = subprocess.run([sys.executable, str(TOOL), "run", "--smoke", "--data", str(prepared), "--out", str(out2),
                        "--work", str(tmp_path / "work"), "train.batch_size=0"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out2 / "summary.json").read_text())
    assert "failed" in summary["training_error"] and summary["steps"] == 0
    assert summary["eval"] == "no checkpoint to evaluate"
    assert not (out2 / "best.pt").exists() and not (out2 / "latest.pt").exists()


def test_run_refuses_a_machine_without_a_gpu(prepared: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = subprocess.run([sys.executable, str(TOOL), "run", "--data", str(prepared), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no CUDA device" in r.stderr
