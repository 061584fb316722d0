"""`reflector train` on a tiny synthetic manifest the test renders: checkpoints, curves, exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from reflector_ros.cli import main
from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.train.augment import random_rescale, random_view
from reflector_ros.train.config import load_config
from reflector_ros.train.streams import epoch_keys
from reflector_ros.train.train import one_cycle_lr

TINY_CFG = {
    "model": {"arch": "small", "input_height": 64, "input_width": 80, "focal_canonical": 300.0,
              "min_depth": 0.1, "max_depth": 20.0, "n_bins": 16},
    "data": {"train": [], "workers": 0, "val": {}, "val_frames": 3},
    "augment": {"crop_hw": [48, 64]},
    "train": {"stage": "end2end", "steps": 3, "batch_size": 2, "lr": 1e-3, "threads": 1,
              "log_every": 1, "eval_every": 2, "ckpt_every": 1, "backbone_lr_mult": 1.0},
    "loss": {"chamfer": 0.1},
}


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--count", "6", "--height", "60", "--width", "80",
                 "--workers", "1", "--preview", "0"]) == 0
    return out


def _config(tmp_path: Path, manifest: Path, **train: object) -> Path:
    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["data"]["train"] = [{"spec": f"manifest:{manifest}", "weight": 1.0}]
    cfg["data"]["val"] = {"synth": f"manifest:{manifest}?frames=0:3"}
    cfg["train"].update(train)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_three_steps_write_checkpoint_curves_metrics(tmp_path: Path, tiny_manifest: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(tmp_path, tiny_manifest)), "--out", str(out)]) == 0
    for name in ("latest.pt", "best.pt", "learning_curves.png", "metrics.jsonl", "config.yaml"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    # the logged rate is the one each step used, not the next step's
    from reflector_ros.train.train import _make_scheduler
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = _make_scheduler(opt, [1e-3], 3, 0.1, 0)
    used = []
    for _ in range(3):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [r["lr"] for r in train_rows] == pytest.approx(used, rel=1e-6)
    assert all(np.isfinite(r["loss"]) and {"ssi", "grad", "silog", "chamfer"} <= set(r) for r in train_rows)
    assert [r["step"] for r in val_rows] == [2, 3]
    assert 0 < val_rows[-1]["val"]["synth"]["abs_rel"] < 10
    ck = torch.load(out / "latest.pt", weights_only=True)
    assert ck["step"] == 3 and "optimizer" in ck and ck["meta"]["n_bins"] == 16
    png = (out / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # the checkpoint is a working model: it loads and exports like any other
    from reflector_ros.model.reflector import load_checkpoint
    model, meta, _ = load_checkpoint(out / "best.pt")
    res = model(torch.zeros(1, 3, 64, 80), torch.ones(1))
    assert res["depth"].shape == (1, 1, 64, 80)


def test_resume_continues_exactly(tmp_path: Path, tiny_manifest: Path) -> None:
    """4 steps straight == 2 steps, stop, --resume to 4: same weights, same log."""
    cfg = _config(tmp_path, tiny_manifest, steps=4, eval_every=100)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--config", str(cfg), "--out", str(a)]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(b), "--stop-at", "2"]) == 0
    ck = torch.load(b / "latest.pt", weights_only=True)
    assert ck["step"] == 2
    ck["elapsed_s"] = 1000.0  # as if the first session had trained for 1000 s
    torch.save(ck, b / "latest.pt")
    assert main(["train", "--resume", str(b)]) == 0        # a run folder: its latest.pt, into that folder
    wa, wb = _weights(a / "latest.pt"), _weights(b / "latest.pt")
    assert torch.load(b / "latest.pt", weights_only=True)["step"] == 4
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)
    la = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    lb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [r["step"] for r in lb] == [1, 2, 3, 4]
    assert [r["loss"] for r in lb] == pytest.approx([r["loss"] for r in la], rel=1e-5)
    # the clock in the log carries on across the resume instead of starting again at 0
    assert lb[1]["time_s"] < 1000.0 <= lb[2]["time_s"] <= lb[3]["time_s"]
    assert torch.load(b / "latest.pt", weights_only=True)["elapsed_s"] >= 1000.0


def test_focal_ratio_and_snapshots(tmp_path: Path, tiny_manifest: Path) -> None:
    """data.val_focal_frames logs the 2x-zoom ratio at each evaluation (and the learning curves
    get a fourth panel), train.keep_snapshots keeps each evaluated state as step_NNNNNN.pt."""
    cfg = _config(tmp_path, tiny_manifest, steps=4, eval_every=2, keep_snapshots=True)
    doc = yaml.safe_load(cfg.read_text())
    doc["data"]["val_focal_frames"] = 2
    cfg.write_text(yaml.safe_dump(doc))
    a = tmp_path / "a"
    assert main(["train", "--config", str(cfg), "--out", str(a)]) == 0
    rows = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    ratios = [r["val"]["synth"]["focal_ratio"] for r in rows if "val" in r]
    assert len(ratios) == 2 and all(0.1 < x < 10 for x in ratios)
    assert sorted(p.name for p in a.glob("step_*.pt")) == ["step_000002.pt", "step_000004.pt"]
    assert torch.load(a / "step_000002.pt", weights_only=True)["step"] == 2
    # resuming from the earlier snapshot abandons the later one: it goes, as its log lines do
    assert main(["train", "--resume", str(a / "step_000002.pt"), "--out", str(a), "--stop-at", "3"]) == 0
    assert sorted(p.name for p in a.glob("step_*.pt")) == ["step_000002.pt", "step_000003.pt"]  # 4 went
    assert max(json.loads(line)["step"] for line in (a / "metrics.jsonl").read_text().splitlines()) == 3
    assert torch.load(a / "best.pt", weights_only=True)["step"] <= 3      # never the abandoned step 4
    # resumed into another folder: the source's log up to the step comes along, and a best.pt
    other = tmp_path / "other"
    assert main(["train", "--resume", str(a / "step_000002.pt"), "--out", str(other), "--stop-at", "3"]) == 0
    rows = [json.loads(line) for line in (other / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val" in r] == [2, 3] and rows[0]["step"] == 1
    assert torch.load(other / "best.pt", weights_only=True)["step"] <= 3
    # a fresh run in a used folder leaves nothing of the earlier run's history, so it may not
    # start from a checkpoint of that folder
    assert main(["train", "--config", str(cfg), "--init", str(a / "best.pt"), "--out", str(a)]) == 2
    assert (a / "best.pt").exists()
    assert main(["train", "--config", str(cfg), "--out", str(a), "train.keep_snapshots=false"]) == 0
    assert not list(a.glob("step_*.pt"))


def test_resume_from_a_plain_dict_config(tmp_path: Path, tiny_manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checkpoints written before the typed config hold the plain dict (no selfsup section,
    data.train items possibly bare spec strings, maybe a key this version dropped): they
    resume, and the run continues exactly as the uninterrupted one."""
    cfg = _config(tmp_path, tiny_manifest, steps=4, eval_every=100)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--config", str(cfg), "--out", str(a)]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(b), "--stop-at", "2"]) == 0
    ck = torch.load(b / "latest.pt", weights_only=True)
    old = json.loads(ck["config"])
    del old["selfsup"]
    old["data"]["train"] = [item["spec"] for item in old["data"]["train"]]
    old["train"]["retired_key"] = 3
    ck["config"] = json.dumps(old)
    torch.save(ck, b / "latest.pt")
    assert main(["train", "--resume", str(b / "latest.pt"), "--out", str(b)]) == 0
    assert "retired_key" in capsys.readouterr().err
    wa, wb = _weights(a / "latest.pt"), _weights(b / "latest.pt")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)


def test_overrides_are_typed_and_applied_in_memory(tmp_path: Path, tiny_manifest: Path) -> None:
    cfg = load_config(_config(tmp_path, tiny_manifest), ["train.lr=3e-4", "augment.crop_hw=[32, 48]",
                                                         "data.val.extra=manifest:x", "train.freeze_backbone=true"])
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)     # YAML reads 3e-4 as a string
    assert cfg.augment.crop_hw == (32, 48) and cfg.train.freeze_backbone is True
    assert set(cfg.data.val) == {"synth", "extra"}
    for bad, match in (("train.steps=1.5", "integer"), ("augment.crop_hw=[1, 2, 3]", "2 values"),
                       ("train.amp=maybe", "true or false"), ("data.epochs=3", "unknown key"),
                       ("train.amp_dtype=float32", "float16"),
                       ("modle.arch=small", "no section"), ("train.lr", "section.key=value")):
        with pytest.raises(InputError, match=match):
            load_config(_config(tmp_path, tiny_manifest), [bad])


def test_resume_with_longer_schedule_and_init(tmp_path: Path, tiny_manifest: Path) -> None:
    cfg = _config(tmp_path, tiny_manifest)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run / "latest.pt"), "--out", str(run), "--steps", "5"]) == 0
    assert torch.load(run / "latest.pt", weights_only=True)["step"] == 5
    # --init starts a fresh schedule (step 0) from the trained weights, e.g. a metric-only stage
    ft = tmp_path / "ft"
    assert main(["train", "--config", str(cfg), "--init", str(run / "latest.pt"), "--out", str(ft),
                 "--stage", "metric", "--steps", "1", "train.freeze_backbone=true"]) == 0
    before, after = _weights(run / "latest.pt"), _weights(ft / "latest.pt")
    bb = [k for k in before if k.startswith("backbone.") and before[k].is_floating_point() and "running" not in k]
    assert bb and all(torch.equal(before[k], after[k]) for k in bb)  # frozen backbone kept
    head = [k for k in before if k.startswith("head.") and before[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in head)


def test_finetune_config_without_model_section_takes_the_init_model(tmp_path: Path, tiny_manifest: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A fine-tune config (config/train_finetune.yaml) names no model: the --init checkpoint's
    model (here 16 bins, 64x80, focal 300, none of them the defaults) is fine-tuned as it is."""
    from reflector_ros.model.reflector import load_checkpoint

    cfg = _config(tmp_path, tiny_manifest)
    base = tmp_path / "base"
    assert main(["train", "--config", str(cfg), "--out", str(base)]) == 0
    doc = yaml.safe_load(cfg.read_text())
    del doc["model"]
    ft_cfg = tmp_path / "finetune.yaml"
    ft_cfg.write_text(yaml.safe_dump(doc))
    ft = tmp_path / "ft"
    assert main(["train", "--config", str(ft_cfg), "--init", str(base / "latest.pt"), "--out", str(ft)]) == 0
    err = capsys.readouterr().err
    assert "the config names no model section" in err
    assert "data.train[0]: 6 frames" in err and "data.val.synth: 3 frames" in err
    # the --init model is evaluated first: step 0 of the curves, and best.pt until beaten
    rows = [json.loads(line) for line in (ft / "metrics.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in rows if "val" in r]
    assert val_steps[0] == 0 and "step 0 (the --init model)" in err
    best_step = torch.load(ft / "best.pt", weights_only=True)["step"]
    first = {r["step"]: r["val"]["synth"]["abs_rel"] for r in rows if "val" in r}
    assert first[best_step] == min(first.values())
    _, meta, _ = load_checkpoint(ft / "best.pt")
    _, base_meta, _ = load_checkpoint(base / "latest.pt")
    assert meta == base_meta
    # a model.* override is the config naming its model: that one is used, with a note
    assert main(["train", "--config", str(ft_cfg), "--init", str(base / "latest.pt"), "--out", str(tmp_path / "ft2"),
                 "model.arch=small", "model.n_bins=16", "model.input_height=64", "model.input_width=80",
                 "model.focal_canonical=300"]) == 0
    assert "names no model section" not in capsys.readouterr().err
    # one that does not fit the --init weights is a plain error, not a state-dict traceback
    assert main(["train", "--config", str(ft_cfg), "--init", str(base / "latest.pt"), "--out", str(tmp_path / "ft3"),
                 "model.arch=small", "model.n_bins=32"]) == 2
    assert "drop the config's model section" in capsys.readouterr().err


def test_confidence_stage_trains_only_the_error_head(tmp_path: Path, tiny_manifest: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Stage confidence adds an error head to an --init model and trains it alone: every other
    weight and BatchNorm statistic stays bit-identical, so the depth does too; the head's
    Laplace NLL falls, validation logs the confidence ranking, and the result resumes."""
    from reflector_ros.model.reflector import load_checkpoint

    cfg = _config(tmp_path, tiny_manifest)
    base = tmp_path / "base"
    assert main(["train", "--config", str(cfg), "--out", str(base)]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "x"), "--stage", "confidence",
                 "train.batch_size=1", "augment.whole_frames=true"]) == 2
    assert "give --init" in capsys.readouterr().err
    run = tmp_path / "conf"
    confidence = ["--stage", "confidence", "--steps", "40", "train.lr=0.01", "train.eval_every=20",
                  "train.batch_size=1", "augment.whole_frames=true"]
    assert main(["train", "--config", str(cfg), "--init", str(base / "latest.pt"), "--out", str(run / "x"),
                 *confidence[:-1]]) == 2
    assert "needs augment.whole_frames" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--init", str(base / "latest.pt"), "--out", str(run),
                 *confidence]) == 0
    err = capsys.readouterr().err
    assert "no error head" in err and "differs from the config" not in err
    before, after = _weights(base / "latest.pt"), _weights(run / "latest.pt")
    assert set(after) - set(before) and all(k.startswith("head.error.") for k in set(after) - set(before))
    assert all(torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    nll = [r["confidence"] for r in rows if "confidence" in r]
    assert len(nll) == 40 and {k for r in rows if "loss" in r for k in r} >= {"confidence"}
    # untrained, b = 1 everywhere: the NLL is the mean relative residual, 1; it falls as the
    # head learns which pixels of a frame are worse
    assert nll[0] == pytest.approx(1.0, abs=1e-3) and np.mean(nll[-10:]) < 0.99
    val = [r["val"]["synth"] for r in rows if "val" in r]
    # steps 0 (the --init model, its new head untrained), 20 and 40
    assert len(val) == 3 and all({"abs_rel", "confident_half_abs_rel", "confidence_gain"} <= set(v) for v in val)
    plain, _, _ = load_checkpoint(base / "latest.pt")
    learned, meta, _ = load_checkpoint(run / "best.pt")
    assert meta.confidence == "learned"
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(plain(x, torch.ones(1))["depth"], learned(x, torch.ones(1))["depth"])
    assert main(["train", "--resume", str(run / "latest.pt"), "--steps", "42"]) == 0   # --out: the run's folder
    assert torch.load(run / "latest.pt", weights_only=True)["step"] == 42
    assert main(["train", "--resume", str(run / "latest.pt"), "--steps", "44", "--stage", "end2end"]) == 2
    assert "cannot continue as stage end2end" in capsys.readouterr().err
    # fine-tuning such a model with an ordinary config keeps its error head, untouched
    capsys.readouterr()
    ft = tmp_path / "ft"
    assert main(["train", "--config", str(cfg), "--init", str(run / "best.pt"), "--out", str(ft), "--steps", "2"]) == 0
    assert "has an error head; it is kept" in capsys.readouterr().err
    (run / "best.onnx").write_bytes(b"an exported graph")
    assert main(["train", "--config", str(cfg), "--init", str(run / "best.onnx"), "--out", str(ft)]) == 2
    assert "is an ONNX graph" in capsys.readouterr().err
    tuned, best = _weights(ft / "latest.pt"), _weights(run / "best.pt")
    assert set(tuned) == set(best)
    assert all(torch.equal(tuned[k], best[k]) for k in best if k.startswith("head.error."))
    assert any(not torch.equal(tuned[k], best[k]) for k in best if k.startswith("head.attractors."))


def test_random_view_keeps_focal_and_moves_principal_point() -> None:
    from reflector_ros.data.sample import Sample

    img = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    depth = np.tile(np.arange(80, dtype=np.float32), (64, 1)) + 1
    s = Sample(img, depth, Intrinsics(70.0, 71.0, 39.5, 31.5, 80, 64))
    for seed in range(8):
        v = random_view(s, np.random.default_rng(seed), (32, 48), flip=True, color=False)
        assert v.image.shape == (32, 48, 3) and (v.camera.fx, v.camera.fy) == (70.0, 71.0)
        # the pixel at the crop's principal point still sees the original principal ray's depth column
        col = int(round(v.camera.cx))
        assert abs(v.depth[0, col] - (39.5 + 1)) < 1.0
    a, b = epoch_keys(10, 0, 3, 0, 2), epoch_keys(10, 0, 3, 1, 2)
    assert len(a) == len(b) == 5 and not set(a[:, 0]) & set(b[:, 0])  # ranks see disjoint samples
    assert np.array_equal(a, epoch_keys(10, 0, 3, 0, 2))


def test_random_rescale_scales_focal_with_the_image() -> None:
    """A zoom by r multiplies fx, fy by r, so canonical targets (depth / focal_scale) shrink by r."""
    from reflector_ros.data.sample import Sample

    img = np.zeros((64, 80, 3), np.uint8)
    s = Sample(img, np.full((64, 80), 2.0, np.float32), Intrinsics(70.0, 71.0, 39.5, 31.5, 80, 64))
    for seed in range(6):
        z = random_rescale(s, np.random.default_rng(seed), (0.75, 1.5))
        h, w = z.depth.shape
        assert 48 <= h <= 96 and z.camera.fx == pytest.approx(70.0 * w / 80) and z.camera.fy == pytest.approx(71.0 * h / 64)
        assert z.camera.cx == pytest.approx((w - 1) / 2) and np.all(z.depth == 2.0)  # depth itself unchanged
    assert random_rescale(s, np.random.default_rng(0), (1.0, 1.0)) is s


@pytest.mark.parametrize("steps,pct", [(10, 0.1), (20, 0.05), (2, 0.5), (1, 0.3)])
def test_one_cycle_schedule_for_short_runs(steps: int, pct: float) -> None:
    """pct_start x steps == 1 made OneCycleLR divide by zero (a 10-step try of a 0.1 config)."""
    from reflector_ros.train.train import _make_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = _make_scheduler(opt, [1e-3], steps, pct, 0)
    lrs = []
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(np.isfinite(lrs)) and max(lrs) <= 1e-3 + 1e-12


def test_time_budget_schedule_shape() -> None:
    """--time-budget follows OneCycle's shape over wall-clock progress."""
    assert one_cycle_lr(0.0, 1e-3, 0.1) == pytest.approx(1e-3 / 25)
    assert one_cycle_lr(0.1, 1e-3, 0.1) == pytest.approx(1e-3)
    assert one_cycle_lr(1.0, 1e-3, 0.1) == pytest.approx(1e-3 / 25 / 100)
    lrs = [one_cycle_lr(f, 1e-3, 0.1) for f in np.linspace(0.1, 1.0, 50)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_bad_configs(tmp_path: Path, tiny_manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="no training data"):
        load_config(None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: {}\n")
    with pytest.raises(InputError, match="unknown sections"):
        load_config(bad)
    cfg = _config(tmp_path, tiny_manifest)
    with pytest.raises(InputError, match="unknown key"):
        load_config(cfg, ["train.lrr=1"])
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "x"), "train.stage=magic"]) == 2
    assert "train.stage" in capsys.readouterr().err
    with pytest.raises(InputError, match="batch_size must be 1"):
        load_config(cfg, ["augment.whole_frames=true"])
    out = tmp_path / "never"
    assert main(["train", "--config", str(cfg), "--out", str(out), 'data.val={far: "manifest:/no/such/set"}']) == 2
    assert "data.val.far: " in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--out", str(out),
                 'data.train=[{spec: "manifest:/no/such/set", weight: 1.0}]']) == 2
    assert "data.train[0]: " in capsys.readouterr().err
    assert not out.exists()  # nothing written for a run that cannot start
    with pytest.raises(InputError, match="context_window_range"):
        load_config(cfg, ["loss.context_window_range=[0.5, 1.0]"])
    with pytest.raises(InputError, match="at least 96 pixels"):
        load_config(cfg, ["train.stage=context"])      # the tiny config's 48x64 crops


def test_ddp_two_processes_on_cpu(tmp_path: Path, tiny_manifest: Path) -> None:
    """torchrun with 2 ranks (gloo on CPU): the DDP path runs, rank 0 alone writes the run folder."""
    import os
    import subprocess
    import sys

    cfg = _config(tmp_path, tiny_manifest)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "reflector_ros.cli", "train", "--config", str(cfg), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("done: step 3") == 1  # only rank 0 reports and writes
    assert torch.load(out / "latest.pt", weights_only=True)["step"] == 3
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]


def test_a_set_without_depth_fails_at_start(tmp_path: Path, tiny_manifest: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A bag validation set named without depth= has nothing to validate against: refused
    before the first step, with its config key, not at the first evaluation."""
    from rosbags.rosbag2 import StoragePlugin
    from test_rosbag import write_bag

    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP)
    cfg = _config(tmp_path, tiny_manifest)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 f"data.val={{b: 'bag:{bag}?image=/cam/image&info=/cam/info'}}"]) == 2
    err = capsys.readouterr().err
    assert "data.val.b: the first frame of" in err and "needs depth=TOPIC" in err
    assert not (tmp_path / "run").exists()


def test_freeze_detail_keeps_the_detail_gain_where_it_starts(tmp_path: Path, tiny_manifest: Path) -> None:
    """train.freeze_detail: three real steps leave head.detail exactly as it was (zero);
    without it the gain leaves zero."""
    runs = {}
    for flag in (True, False):
        out = tmp_path / f"run_{flag}"
        cfg = _config(tmp_path, tiny_manifest, freeze_detail=flag, lr=1e-2)
        assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
        runs[flag] = _weights(out / "latest.pt")
    frozen, free = runs[True], runs[False]
    assert torch.count_nonzero(frozen["head.detail.weight"]) == 0 and torch.count_nonzero(frozen["head.detail.bias"]) == 0
    assert torch.count_nonzero(free["head.detail.weight"]) > 0


def test_a_run_from_before_freeze_detail_resumes_as_it_ran(tmp_path: Path, tiny_manifest: Path) -> None:
    """A checkpoint whose stored config predates train.freeze_detail trained the detail gain;
    it resumes with the gain still training (its optimiser state fits), not with today's default."""
    run = tmp_path / "run"
    cfg = _config(tmp_path, tiny_manifest, freeze_detail=False, lr=1e-2)
    assert main(["train", "--config", str(cfg), "--out", str(run), "--stop-at", "2"]) == 0
    ck = torch.load(run / "latest.pt", weights_only=True)
    stored = json.loads(ck["config"])
    del stored["train"]["freeze_detail"], stored["train"]["amp_dtype"]     # as an older version wrote it
    ck["config"] = json.dumps(stored)
    torch.save(ck, run / "latest.pt")
    before = ck["model"]["head.detail.weight"].clone()
    assert main(["train", "--resume", str(run / "latest.pt"), "--out", str(run)]) == 0
    after = _weights(run / "latest.pt")["head.detail.weight"]
    assert torch.load(run / "latest.pt", weights_only=True)["step"] == 3
    assert not torch.equal(before, after)
