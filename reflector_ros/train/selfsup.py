"""The ``selfsup`` training stage's data and loss: video + camera poses, no depth.

A target frame t is rebuilt from its sources t+o (``selfsup.source_offsets``) through
the predicted metric depth and the known relative poses; the photometric error of that
reconstruction is the loss (reflector_ros/model/photometric.py). Because the poses are
metric (odometry, or a manifest's poses.txt), so is the depth the network learns.

Pose conventions are those of reflector_ros/data/poses.py: camera-to-world poses of the
camera's optical frame; a bag's camera pose at an image's stamp is
``T_odom_base(stamp) @ T_base_optical`` with T_odom_base interpolated from
nav_msgs/Odometry and T_base_optical from /tf_static (or the ``extrinsic`` override).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reflector_ros.core.errors import InputError
from reflector_ros.data.poses import MIRROR_X, relative_pose, select_targets
from reflector_ros.data.sample import Sample
from reflector_ros.model.photometric import SelfsupBatch, selfsup_losses
from reflector_ros.model.warp import refine_pose
from reflector_ros.train.augment import normalise, sequence_view, to_network_scale
from reflector_ros.train.config import AugmentConfig, SelfsupConfig, SequenceItem


class Frames(Sequence[Sample]):
    """Selected frames of a dataset with their depth replaced by zeros (invalid), so the
    self-supervised stage provably learns from colour and poses only."""

    def __init__(self, base: Sequence[Sample], indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        s = self.base[self.indices[i]]
        return Sample(s.image, np.zeros(s.image.shape[:2], np.float32), s.camera, s.name, s.group)


@dataclass
class PosedSequence:
    """Frames in capture order and their camera-to-world poses [N, 4, 4] (optical frame,
    metres); ``no_pose`` counts frames left out for want of a pose (bags: odometry gaps)."""

    name: str
    frames: Sequence[Sample]
    poses: np.ndarray
    no_pose: int = 0


def open_manifest_sequence(spec: str | dict[str, Any]) -> PosedSequence:
    """A manifest folder (``manifest:DIR[?frames=A:B[:S]]``) with DIR/poses.txt, one pose per
    manifest frame; the frame selection applies to the poses too."""
    from reflector_ros.data.manifest import ManifestDataset, parse_indices, read_manifest
    from reflector_ros.data.poses import read_poses_txt
    from reflector_ros.data.registry import parse_spec

    cfg = parse_spec(spec)
    root = Path(str(cfg["path"])).expanduser()
    total = len(read_manifest(root)["frames"])
    poses = read_poses_txt(root / "poses.txt") if (root / "poses.txt").is_file() else None
    if poses is None:
        raise InputError(f"{root}: no poses.txt (camera-to-world 4x4 per frame) for self-supervised training")
    if len(poses) != total:
        raise InputError(f"{root}/poses.txt has {len(poses)} poses for {total} manifest frames")
    frames = cfg.get("frames")
    idx = parse_indices(str(frames) if frames not in (None, "") else None, total)
    ds = ManifestDataset(root)
    return PosedSequence(str(spec), Frames(ds, idx), poses[idx])


def _bag_stamps(ds: Any) -> tuple[Any, list[int]]:
    """(BagDataset, its frame indices) behind a registry bag dataset, with or without frames=."""
    from reflector_ros.data.registry import Subset

    if isinstance(ds, Subset):
        return ds.base, list(ds.indices)
    return ds, list(range(len(ds)))


def bag_extrinsic(path: Path, item: SequenceItem, base: str, camera: str) -> np.ndarray:
    """T_base_camera (camera = optical frame): the item's override, else /tf_static."""
    from reflector_ros.data.poses import chain, transform
    from reflector_ros.data.rosbag import read_static_transforms

    if item.extrinsic is not None:
        return transform(item.extrinsic[:3], item.extrinsic[3:])
    statics = read_static_transforms(path)
    if not statics:
        raise InputError(f"bag {path} has no /tf_static: give the camera's pose on the robot as "
                         f"selfsup.sequences[].extrinsic: [x, y, z, qx, qy, qz, qw] (optical frame in {base!r})")
    return chain(statics, base, camera)


def open_bag_sequence(item: SequenceItem) -> PosedSequence:
    """A bag's colour frames (``bag:PATH?image=...&info=...``) with camera poses from
    nav_msgs/Odometry on ``item.odom_topic`` and the /tf_static extrinsic (see module doc)."""
    from reflector_ros.data.poses import interpolate
    from reflector_ros.data.registry import open_dataset, parse_spec
    from reflector_ros.data.rosbag import read_odometry, topic_frame_id

    cfg = parse_spec(item.spec)
    path = Path(str(cfg["path"])).expanduser()
    ds = open_dataset(item.spec)
    bag, indices = _bag_stamps(ds)
    stamps = np.array([bag.stamp_ns(i) for i in indices], np.int64)
    odom_stamps, T_odom_base, _, odom_child = read_odometry(path, item.odom_topic)
    base = item.base_frame or odom_child
    camera = item.camera_frame or topic_frame_id(path, str(cfg["image"]))
    if not base or not camera:
        raise InputError(f"bag {path}: the odometry child_frame_id or the image frame_id is empty; "
                         f"set selfsup.sequences[].base_frame and camera_frame")
    T_base_cam = bag_extrinsic(path, item, base, camera)
    T_odom_base_at, ok = interpolate(odom_stamps, T_odom_base, stamps, item.max_pose_gap)
    keep = np.nonzero(ok)[0]
    return PosedSequence(str(item.spec), Frames(bag, [indices[k] for k in keep]), T_odom_base_at[keep] @ T_base_cam,
                         no_pose=int(len(indices) - len(keep)))


def open_sequence(item: SequenceItem) -> PosedSequence:
    """A manifest with poses.txt, or a bag with odometry (InputError for other types)."""
    from reflector_ros.data.registry import parse_spec

    kind = parse_spec(item.spec)["type"]
    if kind in ("manifest", "synthetic"):
        return open_manifest_sequence(item.spec)
    if kind == "bag":
        return open_bag_sequence(item)
    raise InputError(f"selfsup.sequences: {item.spec!r} is a {kind!r} set; use a manifest folder with "
                     f"poses.txt or a bag with odometry")


class Targets(Sequence[tuple[int, int]]):
    """The usable target frames of one sequence as (sequence index, frame index) pairs."""

    def __init__(self, seq_id: int, frames: Sequence[int]) -> None:
        self.seq_id, self.frames = seq_id, list(frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[int, int]:  # type: ignore[override]
        return self.seq_id, self.frames[i]


@dataclass
class SequenceData:
    """Opened sequences, their usable targets mixed by weight, and what was skipped."""

    sequences: list[PosedSequence]
    targets: Sequence[tuple[int, int]]
    counts: dict[str, int]
    pair_base: list[int]       # first pose-refinement slot of each sequence
    n_pairs: int


def open_sequences(cfg: SelfsupConfig, epoch_length: int, seed: int) -> SequenceData:
    """Open every sequence, select targets by motion (poses.select_targets), mix by weight
    (data.mixing.BalancedMix, ``epoch_length`` items; 0: all targets once)."""
    from reflector_ros.data.mixing import BalancedMix

    seqs, target_sets, weights = [], [], []
    counts = {"frames": 0, "no_pose": 0, "used": 0, "edge": 0, "too_small": 0, "too_large": 0}
    pair_base, n_pairs = [], 0
    for k, item in enumerate(cfg.sequences):
        seq = open_sequence(item)
        targets, c = select_targets(seq.poses, cfg.source_offsets, cfg.min_translation, cfg.max_translation,
                                    cfg.max_rotation)
        step = np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1) if len(seq.poses) > 1 else np.zeros(1)
        print(f"selfsup: {seq.name}: {len(seq.frames)} frames, {c['used']} targets; skipped "
              f"{c['too_small']} (moved < {cfg.min_translation} m), {c['too_large']} (moved > "
              f"{cfg.max_translation} m or {cfg.max_rotation} deg), {c['edge']} (no source frame), "
              f"{seq.no_pose} without a pose; the camera moves {np.median(step):.3f} m per frame "
              f"(median), sources are {list(cfg.source_offsets)} frames away", file=sys.stderr)
        for key, v in c.items():
            counts[key] += v
        counts["frames"] += len(seq.frames)
        counts["no_pose"] += seq.no_pose
        if targets:
            seqs.append(seq)
            target_sets.append(Targets(len(seqs) - 1, targets))
            weights.append(item.weight)
            pair_base.append(n_pairs)
            n_pairs += len(seq.frames) * len(cfg.source_offsets)
    if not target_sets:
        raise InputError(f"selfsup: no usable target frame in any sequence ({counts}); check the poses, "
                         f"selfsup.min_translation / max_translation / max_rotation and source_offsets")
    length = epoch_length or sum(len(t) for t in target_sets)
    mixed: Sequence[tuple[int, int]] = target_sets[0]
    if len(target_sets) > 1 or length != len(target_sets[0]):
        mixed = BalancedMix(target_sets, weights, length, seed)   # type: ignore[arg-type]
    return SequenceData(seqs, mixed, counts, pair_base, n_pairs)


class SequenceCropSet(torch.utils.data.Dataset):
    """Self-supervised items over (index, seed) keys (same sampling as CropSet).

    Item (tensors; S sources, crop ch x cw, Hs = ch + 2m, Ws = cw + 2m):
    ``image`` [3, ch, cw] normalised network input; ``target`` [3, ch, cw] in [0, 1];
    ``target_valid`` [1, ch, cw] bool; ``sources`` [S, 3, Hs, Ws] in [0, 1];
    ``source_valid`` [S, 1, Hs, Ws] bool; ``K`` [3, 3], ``K_sources`` [S, 3, 3] pixels;
    ``T`` [S, 4, 4] float32 target camera -> source camera, metres; ``focal_scale`` [] =
    ((fx + fy) / 2) / f_c of the crop; ``pair`` [S] int64 pose-refinement slots;
    ``flipped`` [] bool.
    """

    def __init__(self, data: SequenceData, meta: Any, aug: AugmentConfig, cfg: SelfsupConfig) -> None:
        self.data, self.meta, self.aug, self.cfg = data, meta, aug, cfg

    def __len__(self) -> int:
        return len(self.data.targets)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        idx, seed = int(key[0]), int(key[1])
        rng = np.random.default_rng(seed)
        k, t = self.data.targets[idx]
        seq = self.data.sequences[k]
        offsets = self.cfg.source_offsets
        target = to_network_scale(seq.frames[t], self.meta)
        sources = [to_network_scale(seq.frames[t + o], self.meta) for o in offsets]
        T = np.stack([relative_pose(seq.poses[t], seq.poses[t + o]) for o in offsets])
        v = sequence_view(target, sources, T, rng, self.aug.crop_hw, self.aug.scale_range, self.cfg.source_margin,
                          self.aug.flip, self.aug.color)
        S = len(offsets)
        fx, fy = v.K[0, 0], v.K[1, 1]
        return {"image": normalise(v.image, self.meta),
                "target": torch.from_numpy(v.target.transpose(2, 0, 1).astype(np.float32) / 255.0),
                "target_valid": torch.from_numpy(v.target_valid)[None],
                "sources": torch.from_numpy(v.sources.transpose(0, 3, 1, 2).astype(np.float32) / 255.0),
                "source_valid": torch.from_numpy(v.source_valid)[:, None],
                "K": torch.from_numpy(v.K.astype(np.float32)),
                "K_sources": torch.from_numpy(v.K_sources.astype(np.float32)),
                "T": torch.from_numpy(v.T.astype(np.float32)),
                "focal_scale": torch.tensor(0.5 * (fx + fy) / self.meta.focal_canonical, dtype=torch.float32),
                "pair": torch.tensor([self.data.pair_base[k] + t * S + s for s in range(S)], dtype=torch.int64),
                "flipped": torch.tensor(v.flipped)}


class PoseRefiner(nn.Module):
    """Per-pair corrections of the odometry's relative poses (``selfsup.refine_poses``).

    One learnable 6-vector per (target frame, source) pair, zero at the start: a rotation
    vector (radians) and a nudge of the translation's direction (warp.refine_pose), which
    keeps the translation's length, so the metric scale stays the odometry's. The prior
    ``weight * mean(|delta|^2)`` keeps the corrections small where the photometric loss
    does not ask for them.
    """

    def __init__(self, n_pairs: int) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(max(n_pairs, 1), 6))

    def forward(self, T: Tensor, pair: Tensor, flipped: Tensor) -> tuple[Tensor, Tensor]:
        """T [B, S, 4, 4] (mirrored where ``flipped`` [B]), pair [B, S] -> (refined T, prior
        mean squared correction []). Corrections live in the unmirrored frame."""
        b, s = pair.shape
        M = torch.as_tensor(MIRROR_X, dtype=T.dtype, device=T.device)
        mirror = flipped.view(b, 1, 1, 1)
        plain = torch.where(mirror, M @ T @ M, T)
        d = self.delta[pair.reshape(-1)]
        refined = refine_pose(plain.reshape(b * s, 4, 4), d).reshape(b, s, 4, 4)
        return torch.where(mirror, M @ refined @ M, refined), (d ** 2).sum(dim=1).mean()


def depth_scales(out: dict[str, Tensor], focal_scale: Tensor) -> list[Tensor]:
    """The Reflector's metric depth at each resolution it predicts: the full-resolution
    ``depth`` and the 1/4-resolution bin expectation (``canonical_lowres`` x focal_scale)."""
    low = out["canonical_lowres"] * focal_scale.view(-1, 1, 1, 1).to(out["canonical_lowres"].dtype)
    return [out["depth"], low]


def selfsup_terms(out: dict[str, Tensor], batch: dict[str, Tensor], cfg: SelfsupConfig,
                  refiner: PoseRefiner | None = None) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Loss terms of one self-supervised batch (already on the device): ``photo``,
    ``smooth`` and, with a refiner, ``pose_prior``; and {"kept": automask kept fraction}."""
    T = batch["T"]
    terms: dict[str, Tensor] = {}
    if refiner is not None:
        T, prior = refiner(T, batch["pair"], batch["flipped"])
        terms["pose_prior"] = cfg.refine_prior * prior
    sb = SelfsupBatch(batch["target"], batch["target_valid"], batch["sources"], batch["source_valid"],
                      batch["K"], batch["K_sources"], T, cfg.source_margin)
    photo, stats = selfsup_losses(depth_scales(out, batch["focal_scale"]), sb, cfg.photometric_alpha,
                                  cfg.smoothness, cfg.automask)
    return {**photo, **terms}, stats
