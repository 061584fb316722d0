"""Scenes and a model for testing the floor scale anchor with a known, deliberately wrong scale.

``truth_model`` is a real ONNX model, run by the real ONNX Runtime backend, that reads the
true depth back out of the image: frames made by ``encode_depth`` carry 65535·0.2/depth as
16 bits in their red and green bytes. The model multiplies that depth by a wrong factor k
(0.7, 1.4), so the anchor has a network whose metric scale is off by a known amount, and
the test knows the exact answer. Scenes come from the project's synthetic generator with
the camera placed where a ground robot's would be.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from reflector_ros.core.camera import Intrinsics

Q = 65535.0 * 0.2           # q = Q / depth, depth >= 0.2 m


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """(h, w) metres (0 = none) -> (h, w, 3) uint8 with round(Q / depth) in R (high) and G (low)."""
    q = np.where(depth > 0, np.round(Q / np.maximum(depth, 0.2)), 0).astype(np.int64)
    rgb = np.zeros((*depth.shape, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = q >> 8, q & 255
    return rgb


def truth_model(out_dir: Path, height: int, width: int, k: float) -> Path:
    """An ONNX model for frames of exactly height x width: depth = k x the encoded depth."""
    import onnx
    import torch

    from reflector_ros.meta import ModelMeta

    class Decode(torch.nn.Module):
        def forward(self, image: torch.Tensor, focal_scale: torch.Tensor):
            v = torch.round(image * 255.0)                       # mean 0, std 1: the network sees v / 255
            q = v[:, 0:1] * 256.0 + v[:, 1:2]
            depth = k * Q / q * (focal_scale.reshape(1, 1, 1, 1) * 0.0 + 1.0)   # q = 0 -> inf -> NaN in finish
            return depth, torch.ones_like(depth), depth

    meta = ModelMeta(arch="small", input_height=height, input_width=width, mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0), focal_canonical=100.0, n_bins=2)
    path = out_dir / f"truth_x{k:g}.onnx"
    torch.onnx.export(Decode(), (torch.zeros(1, 3, height, width), torch.ones(1)), str(path), opset_version=17,
                      input_names=["image", "focal_scale"], output_names=["depth", "confidence", "rel_depth"],
                      dynamo=False)
    model = onnx.load(str(path))
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def robot_view(seed: int, height: int = 96, width: int = 128, camera_height: float = 0.35,
               pitch_deg: float = 12.0, wall: bool = False) -> tuple[np.ndarray, Intrinsics]:
    """Exact depth and intrinsics of a synthetic room seen by a robot's camera camera_height
    above the floor, pitched down by pitch_deg. wall=True: the camera faces a wall 0.45 m
    away, level, so the wall fills the lower view."""
    from reflector_ros.data.synthetic import camera_rotation, render_scene, sample_scene

    rng = np.random.default_rng(seed)
    scene, cam = sample_scene(rng, height, width)
    lx, ly = scene.room.half[0] * 2, scene.room.half[1] * 2
    if wall:
        scene.objects = []
        cam = replace(cam, position=(lx / 2, 0.45, camera_height), rotation=camera_rotation(-math.pi / 2, 0.0, 0.0))
    else:
        x, y = cam.position[:2]
        yaw = math.atan2(ly / 2 - y, lx / 2 - x)         # across the room
        cam = replace(cam, position=(x, y, camera_height), rotation=camera_rotation(yaw, -math.radians(pitch_deg), 0.0))
    _, depth = render_scene(scene, cam)
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    return depth, cam.intr


def floor_share(depth: np.ndarray, camera: Intrinsics, camera_height: float, pitch_deg: float) -> float:
    """Fraction of the lower half whose true 3-D point lies on the floor (z = 0 in the world)."""
    h, w = depth.shape
    v, u = np.mgrid[h // 2:h, 0:w]
    z = depth[h // 2:]
    y = (v - camera.cy) / camera.fy * z
    p = math.radians(pitch_deg)
    below = y * math.cos(p) + z * math.sin(p)            # distance below the camera along world down
    return float(((z > 0) & (np.abs(below - camera_height) < 0.01)).mean())
