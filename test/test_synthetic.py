"""Synthetic generator: determinism, exact ray-cast depth, plausible intrinsics, the `reflector synth` CLI."""
from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from reflector_ros.core.errors import InputError
from reflector_ros.data.manifest import ManifestDataset
from reflector_ros.core.camera import Intrinsics
from reflector_ros.data.synthetic import (Box, Camera, Material, Scene, camera_rotation, render, render_scene,
                                          sample_scene)

REPO = Path(__file__).resolve().parent.parent
H, W = 48, 64


def test_same_seed_same_frame_other_seed_differs() -> None:
    a, b, c = render(5, H, W), render(5, H, W), render(6, H, W)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert (a.camera.fx, a.camera.fy, a.camera.cx, a.camera.cy) == (b.camera.fx, b.camera.fy, b.camera.cx, b.camera.cy)
    assert not np.array_equal(a.depth, c.depth) and not np.array_equal(a.image, c.image)
    assert a.image.shape == (H, W, 3) and a.image.dtype == np.uint8 and a.depth.dtype == np.float32


def _room(lx: float = 10.0, ly: float = 10.0, lz: float = 6.0) -> Box:
    return Box((lx / 2, ly / 2, lz / 2), (lx / 2, ly / 2, lz / 2), [Material()], interior=True)


def _plane_depth(cam: Camera, x_plane: float) -> np.ndarray:
    """z-depth of the plane x = x_plane, in float64, by an independent per-pixel solve."""
    u, v = np.meshgrid(np.arange(cam.intr.width, dtype=np.float64), np.arange(cam.intr.height, dtype=np.float64))
    rays = np.stack([(u - cam.intr.cx) / cam.intr.fx, (v - cam.intr.cy) / cam.intr.fy, np.ones_like(u)], -1)
    dirs = rays @ cam.rotation.T                  # world direction with unit optical-z component
    return (x_plane - cam.position[0]) / dirs[..., 0]


def test_depth_of_fronto_parallel_wall_is_exact() -> None:
    # camera at x = 2 looking along +x at the wall x = 10: z = 8 m at every pixel, centre or not
    cam = Camera((2.0, 5.0, 3.0), camera_rotation(0.0, 0.0, 0.0), Intrinsics(80.0, 80.0, 30.3, 22.7, W, H))
    _, depth = render_scene(Scene(_room()), cam)
    assert depth.shape == (H, W)
    assert np.abs(depth - 8.0).max() < 1e-4
    # a box whose front face x = 5 is 3 m away, in front of the wall
    box = Box((5.5, 5.0, 3.0), (0.5, 1.0, 0.8), [Material("checker")])
    _, depth = render_scene(Scene(_room(), objects=[box]), cam)
    # pixels whose rays at z = 3 fall inside the face: |y - 5| < 1, |z - 3| < 0.8
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    y = 5.0 - (u - cam.intr.cx) / cam.intr.fx * 3.0
    z = 3.0 - (v - cam.intr.cy) / cam.intr.fy * 3.0
    inside = (np.abs(y - 5) < 0.95) & (np.abs(z - 3) < 0.75)
    outside = (np.abs(y - 5) > 1.05) | (np.abs(z - 3) > 0.85)
    assert inside.sum() > 200 and outside.sum() > 200
    assert np.abs(depth[inside] - 3.0).max() < 1e-4
    assert np.abs(depth[outside] - 8.0).max() < 1e-4


def test_depth_of_oblique_wall_matches_plane_solve() -> None:
    # yawed and pitched camera: depth is the ray parameter along the optical axis, not range
    cam = Camera((2.0, 6.0, 5.0), camera_rotation(0.25, math.radians(-6), math.radians(4)),
                 Intrinsics(70.0, 72.0, 33.0, 21.0, W, H))
    _, depth = render_scene(Scene(_room(10.0, 14.0, 10.0)), cam)
    want = _plane_depth(cam, 10.0)
    # every ray meets the wall x = 10 inside the room (y in 0..14, z in 0..10)
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pts = np.asarray(cam.position) + want[..., None] * (
        np.stack([(u - cam.intr.cx) / cam.intr.fx, (v - cam.intr.cy) / cam.intr.fy, np.ones_like(u)], -1) @ cam.rotation.T)
    on_wall = (pts[..., 1] > 0.05) & (pts[..., 1] < 13.95) & (pts[..., 2] > 0.05) & (pts[..., 2] < 9.95)
    assert on_wall.all()
    assert np.abs(depth - want)[on_wall].max() < 1e-4 * want.max()
    # range (Euclidean) is strictly larger off the axis: a ray-length bug would show here
    assert want.max() > want.min() + 0.3


def test_closed_room_depth_positive_and_bounded() -> None:
    for seed in range(6):
        s = render(seed, H, W)
        assert (s.depth > 0).mean() > 0.99, seed
        scene, cam = sample_scene(np.random.default_rng(seed), H, W)
        boxes = [scene.room] + [op.corridor for op in scene.openings]
        corners = np.array([[b.center[i] + sgn[i] * b.half[i] for i in range(3)]
                            for b in boxes for sgn in itertools.product((-1, 1), repeat=3)])
        far = np.linalg.norm(corners - np.asarray(cam.position), axis=1).max()
        assert s.depth.max() < far, seed
        assert s.depth[s.depth > 0].min() > 0.01, seed


def test_intrinsics_in_documented_range_and_scale_with_size() -> None:
    for seed in range(8):
        s = render(seed, H, W)
        assert 0.5 * W / math.tan(math.radians(42.5)) <= s.camera.fx <= 0.5 * W / math.tan(math.radians(25.0))
        assert abs(s.camera.fy / s.camera.fx - 1) <= 0.02
        assert abs(s.camera.cx - (W - 1) / 2) <= 0.04 * W and abs(s.camera.cy - (H - 1) / 2) <= 0.04 * H
        _, big = sample_scene(np.random.default_rng(seed), 2 * H, 2 * W)
        _, small = sample_scene(np.random.default_rng(seed), H, W)
        assert big.intr.fx == pytest.approx(2 * small.intr.fx) and big.intr.fy == pytest.approx(2 * small.intr.fy)
        assert (small.intr.fx, small.intr.fy, small.intr.cx, small.intr.cy) == (s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy)
    with pytest.raises(InputError):
        render(0, 4, W)


def _synth(out: Path, count: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "reflector_ros.cli", "synth", "--out", str(out), "--count",
                           str(count), "--height", str(H), "--width", str(W), "--workers", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_cli_writes_resumable_manifest(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    r = _synth(out, 3)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rendering 3" in r.stdout
    ds = ManifestDataset(out)
    assert len(ds) == 3
    for i, s in enumerate(ds):
        ref = render(i, H, W)
        assert (s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy) == pytest.approx((ref.camera.fx, ref.camera.fy, ref.camera.cx, ref.camera.cy))
        assert np.abs(s.depth - ref.depth).max() <= 0.0005 + 1e-6
    prev = cv2.imread(str(out / "preview.png"))
    assert prev is not None and prev.shape == (2 * H, 4 * W, 3)   # 3 frames: 2 rows of (rgb | depth) x 2

    stamps = {p: p.stat().st_mtime_ns for p in (out / "rgb").iterdir()}
    (out / "rgb" / "00000001.jpg").unlink()
    r = _synth(out, 4)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 frames present, rendering 2" in r.stdout
    for p, t in stamps.items():
        if p.name != "00000001.jpg":
            assert p.stat().st_mtime_ns == t, p
    assert len(ManifestDataset(out)) == 4 and (out / "rgb" / "00000001.jpg").exists()

    bad = _synth(tmp_path / "bad", 0)
    assert bad.returncode == 2 and "--count" in bad.stdout and "Traceback" not in bad.stderr


def test_close_views_look_down_at_something_near() -> None:
    """close_fraction 1: every frame looks down at a target 0.5-2 m away, from outside every
    object; close_fraction 0 leaves the scenes of earlier versions exactly as they were."""
    from reflector_ros.data.synthetic import _inside

    near = []
    for seed in range(6):
        scene, cam = sample_scene(np.random.default_rng(seed), H, W, close_fraction=1.0)
        look = cam.rotation[:, 2]
        assert look[2] < 0                                   # looking down
        assert not any(_inside(o, np.asarray(cam.position), margin=0.0) for o in scene.objects)
        s = render(seed, H, W, close_fraction=1.0)
        near.append(float(np.median(s.depth[s.depth > 0])))
        _, plain = sample_scene(np.random.default_rng(seed), H, W)
        _, again = sample_scene(np.random.default_rng(seed), H, W, close_fraction=0.0)
        assert plain.position == again.position and np.array_equal(plain.rotation, again.rotation)
    assert np.median(near) < 2.0, near


def test_a_folder_holds_one_kind_of_set_at_one_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Re-running synth into a folder adds frames only with the same settings; another size, a
    trajectory into rooms or rooms into a trajectory is refused before anything is written
    (the manifest used to be rewritten to the new size over frames of the old one)."""
    from reflector_ros.cli import main

    rooms, traj = tmp_path / "rooms", tmp_path / "traj"
    base = ["synth", "--workers", "1", "--preview", "0", "--height", "48", "--width", "64"]
    assert main([*base, "--out", str(rooms), "--count", "2"]) == 0
    assert main([*base, "--out", str(rooms), "--count", "3"]) == 0            # same settings: one frame more
    assert len(ManifestDataset(rooms)) == 3
    before = (rooms / "manifest.json").read_text()
    capsys.readouterr()
    for extra in (["--height", "60"], ["--close-fraction", "0.5"], ["--trajectory", "--count", "4"]):
        args = [*base, "--out", str(rooms), "--count", "3", *extra]
        assert main(args) == 2, extra
        assert "other settings" in capsys.readouterr().out
    assert (rooms / "manifest.json").read_text() == before and not (rooms / "poses.txt").exists()
    assert main([*base, "--out", str(traj), "--count", "4", "--trajectory"]) == 0
    assert main([*base, "--out", str(traj), "--count", "4"]) == 2               # rooms into a trajectory
    assert "kind trajectory (this run: rooms)" in capsys.readouterr().out
    assert len(ManifestDataset(traj)) == 4
