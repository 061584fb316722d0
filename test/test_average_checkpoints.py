"""tools/average_checkpoints.py: the mean of a run's snapshots, refused across runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from reflector_ros.meta import ModelMeta
from reflector_ros.model.reflector import build_model, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parent.parent


def test_mean_of_snapshots(tmp_path: Path) -> None:
    meta = ModelMeta(arch="small", input_height=64, input_width=80, n_bins=16)
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        paths.append(save_checkpoint(tmp_path / f"s{seed}.pt", build_model(meta), meta))
    out = tmp_path / "mean.pt"
    proc = subprocess.run([sys.executable, "tools/average_checkpoints.py", str(out), *map(str, paths)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mean, _, extra = load_checkpoint(out)
    states = [load_checkpoint(p)[0].state_dict() for p in paths]
    key = "head.bins.out.weight" if "head.bins.out.weight" in states[0] else next(
        k for k, v in states[0].items() if v.is_floating_point() and v.dim() == 4)
    torch.testing.assert_close(mean.state_dict()[key], sum(s[key] for s in states) / 3)
    assert extra["averaged"] == [str(p) for p in paths]
    other = ModelMeta(arch="small", input_height=64, input_width=80, n_bins=8)
    odd = save_checkpoint(tmp_path / "odd.pt", build_model(other), other)
    proc = subprocess.run([sys.executable, "tools/average_checkpoints.py", str(out), str(paths[0]), str(odd)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not one run" in proc.stderr
