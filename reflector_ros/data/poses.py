"""Camera poses for self-supervised training: files, odometry, extrinsics, motion checks.

Conventions (numpy, float64, metres, right-handed):

- ``T_a_b`` is a 4x4 rigid transform that maps coordinates in frame b to frame a
  (x_a = T_a_b @ x_b); it is also the pose of frame b expressed in frame a. This is
  the meaning of a ROS transform with header.frame_id = a and child_frame_id = b, and of
  nav_msgs/Odometry's pose (a = header.frame_id, e.g. ``odom``; b = child_frame_id,
  e.g. ``base_link``).
- Camera poses are **camera-to-world** ``T_world_camera`` of the camera's **optical**
  frame (REP 103 ``*_optical_frame``: x right, y down, z forward), the convention of a
  manifest's ``poses.txt`` (16 numbers per line, row-major, one line per manifest frame;
  the HoloLens sequence in ../shared/data uses it). A ROS ``camera_link`` (x forward,
  y left, z up) is *not* an optical frame: the fixed rotation between the two is part of
  the extrinsic (``T_LINK_OPTICAL``).
- The relative pose used to warp target pixels into a source frame is
  ``T_source_target = inverse(T_world_source) @ T_world_target`` (relative_pose).
- Quaternions are (x, y, z, w) as in geometry_msgs/Quaternion.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from reflector_ros.core.errors import InputError

# T_link_optical: the optical frame (x right, y down, z forward) in a camera_link frame
# (x forward, y left, z up), as REP 103 drivers publish "<camera>_optical_frame" under
# "<camera>_link"; quaternion (x, y, z, w) = (-0.5, 0.5, -0.5, 0.5)
T_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0],
                              [-1.0, 0.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0, 0.0],
                              [0.0, 0.0, 0.0, 1.0]])
# x -> -x: what a horizontal image mirror does to camera coordinates; a relative pose T
# seen in mirrored images is MIRROR_X @ T @ MIRROR_X
MIRROR_X = np.diag([-1.0, 1.0, 1.0, 1.0])
ORTHONORMAL_TOL = 1e-3


def quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation matrix (normalised first)."""
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 1e-12:
        raise InputError(f"quaternion {tuple(q)} has zero length")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    R = np.asarray(R, np.float64)
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = math.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k]) * 2
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    out = np.asarray(q)
    out /= np.linalg.norm(out)
    return -out if out[3] < 0 else out


def transform(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """4x4 T from a translation (x, y, z) metres and a quaternion (x, y, z, w)."""
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(quaternion)
    T[:3, 3] = [float(v) for v in translation]
    return T


def inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4] (R^T, -R^T t)."""
    T = np.asarray(T, np.float64)
    out = np.zeros_like(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ T[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def relative_pose(T_world_target: np.ndarray, T_world_source: np.ndarray) -> np.ndarray:
    """T_source_target = inverse(T_world_source) @ T_world_target from camera-to-world poses:
    maps target-camera coordinates to source-camera coordinates (what warping needs)."""
    return inverse(T_world_source) @ np.asarray(T_world_target, np.float64)


def motion(T: np.ndarray) -> tuple[float, float]:
    """(translation length in metres, rotation angle in degrees) of a relative pose."""
    R = np.asarray(T)[:3, :3]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(np.trace(R)) - 1) / 2))))
    return float(np.linalg.norm(np.asarray(T)[:3, 3])), angle


def check_rigid(T: np.ndarray, where: str) -> np.ndarray:
    """T [N, 4, 4] as float64 if every matrix is rigid (orthonormal R, det +1, last row
    0 0 0 1, finite), else InputError naming the first bad one."""
    T = np.asarray(T, np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise InputError(f"{where}: expected 4x4 matrices, got shape {T.shape}")
    for i, m in enumerate(T):
        R = m[:3, :3]
        ok = (np.isfinite(m).all() and np.allclose(m[3], [0, 0, 0, 1], atol=1e-6)
              and np.abs(R @ R.T - np.eye(3)).max() < ORTHONORMAL_TOL and np.linalg.det(R) > 0)
        if not ok:
            raise InputError(f"{where}: pose {i} is not a rigid transform (rotation not orthonormal, "
                             f"or last row not 0 0 0 1)")
    return T


def read_poses_txt(path: str | Path) -> np.ndarray:
    """A manifest's poses.txt -> [N, 4, 4] camera-to-world (optical frame), float64.

    One pose per non-empty line, 16 numbers, row-major; '#' starts a comment.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read poses {path}: {exc.strerror}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            vals = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            raise InputError(f"{path}:{n}: not numbers") from None
        if len(vals) != 16:
            raise InputError(f"{path}:{n}: expected 16 numbers (a row-major 4x4), got {len(vals)}")
        rows.append(vals)
    if not rows:
        raise InputError(f"{path}: no poses")
    return check_rigid(np.asarray(rows).reshape(-1, 4, 4), str(path))


def write_poses_txt(path: str | Path, poses: Iterable[np.ndarray]) -> Path:
    """[N, 4, 4] camera-to-world poses -> poses.txt (16 numbers per line, row-major)."""
    arr = check_rigid(np.asarray(list(poses)), str(path))
    path = Path(path)
    np.savetxt(path, arr.reshape(len(arr), 16), fmt="%.18e")
    return path


def interpolate(stamps: np.ndarray, poses: np.ndarray, query: np.ndarray, max_gap: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Poses at query times: linear in translation, spherical-linear in rotation.

    stamps [N] int nanoseconds, sorted; poses [N, 4, 4]; query [M] nanoseconds. Returns
    (poses [M, 4, 4], ok [M] bool): ok is False outside [stamps[0], stamps[-1]] and where
    the two bracketing stamps are more than ``max_gap`` seconds apart.
    """
    stamps = np.asarray(stamps, np.int64)
    query = np.asarray(query, np.int64)
    out = np.tile(np.eye(4), (len(query), 1, 1))
    ok = np.zeros(len(query), bool)
    if len(stamps) == 0:
        return out, ok
    quats = np.stack([matrix_to_quat(p[:3, :3]) for p in poses])
    gap_ns = max_gap * 1e9
    for i, t in enumerate(query):
        j = int(np.searchsorted(stamps, t, side="right"))
        if j == 0 or (j == len(stamps) and t > stamps[-1]):
            continue
        a = j - 1
        if stamps[a] == t:
            out[i], ok[i] = poses[a], True
            continue
        b = j
        if stamps[b] - stamps[a] > gap_ns:
            continue
        f = float(t - stamps[a]) / float(stamps[b] - stamps[a])
        qa, qb = quats[a], quats[b]
        if float(qa @ qb) < 0:
            qb = -qb
        dot = min(1.0, float(qa @ qb))
        theta = math.acos(dot)
        if theta < 1e-9:
            q = qa
        else:
            q = (math.sin((1 - f) * theta) * qa + math.sin(f * theta) * qb) / math.sin(theta)
        out[i, :3, :3] = quat_to_matrix(q)
        out[i, :3, 3] = (1 - f) * poses[a][:3, 3] + f * poses[b][:3, 3]
        ok[i] = True
    return out, ok


def chain(transforms: Sequence[tuple[str, str, np.ndarray]], parent: str, child: str) -> np.ndarray:
    """T_parent_child through a set of static transforms (parent, child, T_parent_child),
    walking edges in either direction (a tf tree). InputError when no path joins them."""
    if parent == child:
        return np.eye(4)
    edges: dict[str, list[tuple[str, np.ndarray]]] = {}
    for a, b, T in transforms:
        edges.setdefault(a, []).append((b, np.asarray(T, np.float64)))
        edges.setdefault(b, []).append((a, inverse(T)))
    seen = {parent}
    frontier = [(parent, np.eye(4))]
    while frontier:
        nxt = []
        for frame, T_parent_frame in frontier:
            for other, T_frame_other in edges.get(frame, []):
                if other in seen:
                    continue
                T = T_parent_frame @ T_frame_other
                if other == child:
                    return T
                seen.add(other)
                nxt.append((other, T))
        frontier = nxt
    known = sorted(edges)
    raise InputError(f"no static transform joins {parent!r} and {child!r}; frames in /tf_static: {known}")


def select_targets(poses: np.ndarray, offsets: Sequence[int], min_translation: float, max_translation: float,
                   max_rotation: float) -> tuple[list[int], dict[str, int]]:
    """Frames usable as targets: every source t+o exists and moved, relative to t, at
    least ``min_translation`` metres (parallax: a standing robot teaches nothing), at most
    ``max_translation`` metres and ``max_rotation`` degrees (overlap, odometry jumps).

    poses [N, 4, 4] camera-to-world. Returns (target indices, counts): counts has
    ``used``, ``edge`` (a source index outside the sequence), ``too_small``, ``too_large``;
    a frame is counted once, under its first failing reason in that order.
    """
    n = len(poses)
    counts = {"used": 0, "edge": 0, "too_small": 0, "too_large": 0}
    targets = []
    for t in range(n):
        if any(not 0 <= t + o < n for o in offsets):
            counts["edge"] += 1
            continue
        moves = [motion(relative_pose(poses[t], poses[t + o])) for o in offsets]
        if any(d < min_translation for d, _ in moves):
            counts["too_small"] += 1
        elif any(d > max_translation or a > max_rotation for d, a in moves):
            counts["too_large"] += 1
        else:
            counts["used"] += 1
            targets.append(t)
    return targets, counts
