"""Self-supervised stage on real tensors: warping, auto-masking, poses from files and bags,
pose refinement, and `reflector train` with stage selfsup (run, resume exactly).

The sequences are rendered here by the synthetic generator's trajectory mode (exact
depth, known camera-to-world poses, no sensor noise), written to disk as a manifest
with poses.txt or as a rosbag2 with Odometry + /tf_static, and read back through the
training code, so a convention error anywhere on the way shows up as a photometric
loss that is no longer near zero at the true depth.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from reflector_ros.cli import main
from reflector_ros.core.errors import InputError
from reflector_ros.data.poses import (
    T_LINK_OPTICAL, inverse, matrix_to_quat, read_poses_txt, relative_pose, select_targets, transform,
    write_poses_txt,
)
from reflector_ros.data.synthetic import write_trajectory
from reflector_ros.meta import ModelMeta
from reflector_ros.model.photometric import SelfsupBatch, min_reprojection, photometric_error, selfsup_losses
from reflector_ros.model.warp import refine_pose, so3_exp
from reflector_ros.train.config import AugmentConfig, SelfsupConfig, SequenceItem, load_config
from reflector_ros.train.selfsup import (
    PosedSequence, PoseRefiner, SequenceCropSet, SequenceData, open_bag_sequence, open_manifest_sequence,
)

H, W, STEP, N = 120, 160, 0.25, 5
SEEDS = (6, 11, 13)            # three rooms; the frames are fully determined by the seed
TARGET = 2                     # sources 1 and 3
META = ModelMeta(input_height=H, input_width=W)     # resize mode at the frame size: no resampling
TS = get_typestore(Stores.ROS2_HUMBLE)
T0 = 1_700_000_000 * 10**9
# the camera on the robot: camera_link 0.25 m ahead, 0.6 m up, pitched 10 degrees down
T_BASE_LINK = transform((0.25, -0.05, 0.6), (0.0, math.sin(math.radians(5)), 0.0, math.cos(math.radians(5))))
T_BASE_OPTICAL = T_BASE_LINK @ T_LINK_OPTICAL


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("traj")
    out = {}
    for seed in SEEDS:
        write_trajectory(root / str(seed), seed, N, H, W, STEP, noise=False)
        out[seed] = root / str(seed)
    return out


def _gt_depth(folder: Path, i: int) -> np.ndarray:
    from reflector_ros.data.manifest import ManifestDataset
    return ManifestDataset(folder)[i].depth


def _item(seq: PosedSequence, flip: bool = False, seed: int = 0, margin: int = 0) -> dict[str, torch.Tensor]:
    """The training item of target TARGET, whole frame, no zoom or colour change."""
    cfg = SelfsupConfig(source_offsets=(-1, 1), source_margin=margin)
    data = SequenceData([seq], [(0, TARGET)], {}, [0], len(seq.frames) * 2)
    aug = AugmentConfig(crop_hw=(H, W), scale_range=(1.0, 1.0), flip=flip, color=False)
    return SequenceCropSet(data, META, aug, cfg)[(0, seed)]


def _batch(item: dict[str, torch.Tensor], T: torch.Tensor | None = None, margin: int = 0) -> SelfsupBatch:
    return SelfsupBatch(item["target"][None], item["target_valid"][None], item["sources"][None],
                        item["source_valid"][None], item["K"][None], item["K_sources"][None],
                        (item["T"] if T is None else T)[None], margin)


def _photo(item: dict[str, torch.Tensor], depth: np.ndarray, scale: float = 1.0, T: torch.Tensor | None = None) -> float:
    d = torch.from_numpy(np.ascontiguousarray(depth))[None, None]
    if bool(item["flipped"]):
        d = d.flip(-1)
    terms, _ = selfsup_losses([d * scale], _batch(item, T), smoothness=0.0, automask=False)
    return float(terms["photo"])


# ----------------------------------------------------------------------------- warping

def test_photometric_loss_is_near_zero_only_at_the_true_depth(trajectories: dict[int, Path]) -> None:
    """manifest + poses.txt -> training item -> warp: ~0 at the true depth, clearly more at
    0.8x and 1.25x, and much more if poses.txt were read as world-to-camera."""
    for seed, folder in trajectories.items():
        seq = open_manifest_sequence(f"manifest:{folder}")
        depth = _gt_depth(folder, TARGET)
        item = _item(seq)
        true = _photo(item, depth)
        assert true < 0.02, (seed, true)
        for wrong in (0.8, 1.25):
            assert _photo(item, depth, wrong) > 1.25 * true, (seed, wrong)
        # the same file taken as world-to-camera gives other relative poses: far worse
        P = seq.poses
        swapped = np.stack([relative_pose(inverse(P[TARGET]), inverse(P[TARGET + o])) for o in (-1, 1)])
        assert _photo(item, depth, T=torch.tensor(swapped, dtype=torch.float32)) > 2.5 * true, seed
        # mirrored views mirror the poses with the images: still ~0 at the true depth
        flipped = next(_item(seq, flip=True, seed=s) for s in range(20) if bool(_item(seq, flip=True, seed=s)["flipped"]))
        assert _photo(flipped, depth) == pytest.approx(true, rel=0.3, abs=2e-3)


def test_generator_poses_are_camera_to_world_optical(trajectories: dict[int, Path]) -> None:
    """Geometry alone, no photometry: a target pixel's 3-D point, moved with the poses into
    the next camera, lands where that camera's own depth map has the same distance."""
    folder = trajectories[SEEDS[0]]
    from reflector_ros.data.manifest import ManifestDataset

    ds = ManifestDataset(folder)
    P = read_poses_txt(folder / "poses.txt")
    steps = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
    assert np.allclose(steps, STEP, rtol=0.05)              # metres per frame, as asked
    a, b = ds[TARGET], ds[TARGET + 1]
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    Z = a.depth.astype(np.float64)
    pts = np.stack([(u - a.camera.cx) * Z / a.camera.fx, (v - a.camera.cy) * Z / a.camera.fy, Z, np.ones_like(Z)]).reshape(4, -1)
    q = relative_pose(P[TARGET], P[TARGET + 1]) @ pts
    ub, vb = np.rint(b.camera.fx * q[0] / q[2] + b.camera.cx).astype(int), np.rint(b.camera.fy * q[1] / q[2] + b.camera.cy).astype(int)
    ok = (Z.reshape(-1) > 0) & (q[2] > 0.1) & (ub >= 0) & (ub < W) & (vb >= 0) & (vb < H)
    found = b.depth[vb[ok], ub[ok]]
    rel = np.abs(found - q[2][ok]) / q[2][ok]
    assert ok.mean() > 0.3 and np.median(rel) < 0.01       # occlusion edges aside, the same surface


# ----------------------------------------------------------------------------- auto-masking

def test_automask_masks_a_static_pair_and_keeps_a_moving_one(trajectories: dict[int, Path]) -> None:
    folder = trajectories[SEEDS[1]]
    seq = open_manifest_sequence(f"manifest:{folder}")
    depth = torch.from_numpy(_gt_depth(folder, TARGET))[None, None]
    moving = _item(seq)
    # static camera: the sources are the target image itself; once with the identity pose,
    # once with the moving pair's poses (odometry says it moved: objects moving with the camera)
    static = dict(moving, sources=moving["target"][None].repeat(2, 1, 1, 1))
    for T in (torch.eye(4).repeat(2, 1, 1), moving["T"]):
        _, stats = selfsup_losses([depth], _batch(static, T), smoothness=0.0, automask=True)
        assert stats["kept"] < 0.01, stats
    _, stats = selfsup_losses([depth], _batch(moving), smoothness=0.0, automask=True)
    assert stats["kept"] > 0.5, stats


def test_min_reprojection_takes_the_better_source_per_pixel() -> None:
    """Source 1 matches the target on the right half only, source 2 on the left half only:
    the per-pixel minimum is ~0 everywhere; with source 2 out of view the left half is not."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 8, 8, generator=g)
    s1, s2 = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    s1[..., 4:], s2[..., :4] = target[..., 4:], target[..., :4]
    warped = torch.stack([s1, s2], dim=1)
    valid = torch.ones(1, 2, 1, 8, 8, dtype=torch.bool)
    rep = min_reprojection(target, warped, valid)
    seam = [3, 4]                                     # SSIM's 3x3 window reaches across the seam
    away = [c for c in range(8) if c not in seam]
    assert float(rep.error[..., away].max()) < 1e-6 and bool(rep.kept.all())
    valid[:, 1] = False
    rep = min_reprojection(target, warped, valid)
    assert float(rep.error[..., :3].min()) > 0.05 and float(rep.error[..., 5:].max()) < 1e-6


def test_photometric_error_bounds() -> None:
    x = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    assert float(photometric_error(x, x).abs().max()) < 1e-6
    e = photometric_error(x, 1 - x)
    assert e.shape == (2, 1, 10, 12) and 0.1 < float(e.mean()) <= 1.0


# ----------------------------------------------------------------------------- poses

def _header(stamp: int, frame: str):
    return TS.types["std_msgs/msg/Header"](stamp=TS.types["builtin_interfaces/msg/Time"](
        sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame)


def _odometry(stamp: int, T: np.ndarray):
    q = matrix_to_quat(T[:3, :3])
    M = TS.types
    pose = M["geometry_msgs/msg/Pose"](position=M["geometry_msgs/msg/Point"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                                       orientation=M["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
    zero3 = M["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    return M["nav_msgs/msg/Odometry"](
        header=_header(stamp, "odom"), child_frame_id="base_link",
        pose=M["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=M["geometry_msgs/msg/TwistWithCovariance"](twist=M["geometry_msgs/msg/Twist"](linear=zero3, angular=zero3),
                                                         covariance=np.zeros(36)))


def _tf(stamp: int, parent: str, child: str, T: np.ndarray):
    q = matrix_to_quat(T[:3, :3])
    M = TS.types
    return M["geometry_msgs/msg/TransformStamped"](
        header=_header(stamp, parent), child_frame_id=child,
        transform=M["geometry_msgs/msg/Transform"](translation=M["geometry_msgs/msg/Vector3"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                                                   rotation=M["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))


def _image(stamp: int, rgb: np.ndarray):
    h, w = rgb.shape[:2]
    return TS.types["sensor_msgs/msg/Image"](header=_header(stamp, "camera_optical_frame"), height=h, width=w,
                                             encoding="rgb8", is_bigendian=0, step=w * 3, data=rgb.reshape(-1))


def _info(stamp: int, fx: float, fy: float, cx: float, cy: float, w: int, h: int):
    M = TS.types
    return M["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp, "camera_optical_frame"), height=h, width=w, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0,
        roi=M["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def write_robot_bag(path: Path, images: list[tuple[int, np.ndarray]], odom: list[tuple[int, np.ndarray]],
                    intrinsics: tuple[float, float, float, float], tf_static: bool = True) -> Path:
    """A rosbag2 (sqlite3) as a robot records it: /camera/image_raw + /camera/camera_info,
    nav_msgs/Odometry on /odom (odom -> base_link), and base_link -> camera_link ->
    camera_optical_frame on /tf_static."""
    h, w = images[0][1].shape[:2]
    with Writer(path, version=9) as bag:
        c_img = bag.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        c_info = bag.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TS)
        c_odom = bag.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=TS)
        records = [(t, c_odom, _odometry(t, T)) for t, T in odom]
        for t, rgb in images:
            records += [(t, c_img, _image(t, rgb)), (t, c_info, _info(t, *intrinsics, w, h))]
        if tf_static:
            c_tf = bag.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=TS)
            msg = TS.types["tf2_msgs/msg/TFMessage"](transforms=[
                _tf(T0, "base_link", "camera_link", T_BASE_LINK),
                _tf(T0, "camera_link", "camera_optical_frame", T_LINK_OPTICAL)])
            records.append((T0 - 1, c_tf, msg))
        for t, conn, msg in sorted(records, key=lambda r: r[0]):
            bag.write(conn, t, TS.serialize_cdr(msg, conn.msgtype))
    return path


def _bag_item(path: Path, **kw: object) -> SequenceItem:
    return SequenceItem(spec=f"bag:{path}?image=/camera/image_raw&info=/camera/camera_info", **kw)  # type: ignore[arg-type]


def test_bag_odometry_and_tf_static_give_the_constructed_camera_poses(tmp_path: Path) -> None:
    """Odometry at 50 Hz on a path with constant velocity and yaw rate (interpolation is
    exact there), images at 10 Hz between odometry stamps: the camera poses are
    T_odom_base(t) @ T_base_link @ T_link_optical, built here by hand."""
    def base_pose(t_s: float) -> np.ndarray:
        yaw = 0.3 + 0.4 * t_s                          # rad, 0.4 rad/s
        return transform((1.0 + 0.5 * t_s, -2.0 + 0.2 * t_s, 0.0), (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)))

    odom = [(T0 + k * 20_000_000, base_pose(k * 0.02)) for k in range(60)]           # 0 .. 1.18 s
    stamps = [T0 - 50_000_000] + [T0 + 7_000_000 + k * 100_000_000 for k in range(13)]  # first, last: no odometry
    rgb = np.full((24, 32, 3), 90, np.uint8)
    bag = write_robot_bag(tmp_path / "robot", [(t, rgb) for t in stamps], odom, (30.0, 30.0, 15.5, 11.5))
    seq = open_bag_sequence(_bag_item(bag))
    inside = [t for t in stamps if T0 <= t <= odom[-1][0]]
    assert len(seq.frames) == len(inside) == 12 and seq.no_pose == 2
    want = np.stack([base_pose((t - T0) / 1e9) @ T_BASE_LINK @ T_LINK_OPTICAL for t in inside])
    np.testing.assert_allclose(seq.poses, want, atol=1e-9)
    # the optical frame, not the link: the camera looks along the base's x axis, image y down
    assert seq.poses[0][:3, :3].T @ want[0][:3, :3] == pytest.approx(np.eye(3), abs=1e-9)
    fwd = seq.poses[0][:3, 2]
    base_x = base_pose((inside[0] - T0) / 1e9)[:3, 0]
    assert fwd @ base_x > 0.98 and seq.poses[0][2, 1] < -0.98          # z forward, y down (world z up)

    with pytest.raises(InputError, match="'/wheel_odom' is not in bag"):
        open_bag_sequence(_bag_item(bag, odom_topic="/wheel_odom"))
    # the same bag without /tf_static needs the extrinsic, and with it gives the same poses
    bare = write_robot_bag(tmp_path / "bare", [(t, rgb) for t in stamps], odom, (30.0, 30.0, 15.5, 11.5),
                           tf_static=False)
    with pytest.raises(InputError, match="extrinsic"):
        open_bag_sequence(_bag_item(bare))
    q = matrix_to_quat(T_BASE_OPTICAL[:3, :3])
    given = open_bag_sequence(_bag_item(bare, extrinsic=(*T_BASE_OPTICAL[:3, 3], *q)))
    np.testing.assert_allclose(given.poses, want, atol=1e-9)


def test_warping_through_a_robot_bag(trajectories: dict[int, Path], tmp_path: Path) -> None:
    """The synthetic frames recorded as a robot would (odometry of the base, camera extrinsic
    on /tf_static): ~0 loss at the true depth; taking camera_link for the optical frame
    (camera_frame override) breaks it."""
    from reflector_ros.data.manifest import ManifestDataset

    folder = trajectories[SEEDS[2]]
    ds = ManifestDataset(folder)
    P = read_poses_txt(folder / "poses.txt")
    stamps = [T0 + k * 100_000_000 for k in range(N)]
    odom = [(t, P[k] @ inverse(T_BASE_OPTICAL)) for k, t in enumerate(stamps)]   # world = odom
    odom = [(T0 - 10**8, odom[0][1])] + odom + [(stamps[-1] + 10**8, odom[-1][1])]
    s = ds[0]
    bag = write_robot_bag(tmp_path / "robot", [(t, ds[k].image) for k, t in enumerate(stamps)], odom,
                          (s.camera.fx, s.camera.fy, s.camera.cx, s.camera.cy))
    seq = open_bag_sequence(_bag_item(bag))
    np.testing.assert_allclose(seq.poses, P, atol=1e-6)
    depth = _gt_depth(folder, TARGET)
    true = _photo(_item(seq), depth)
    manifest_true = _photo(_item(open_manifest_sequence(f"manifest:{folder}")), depth)
    assert true == pytest.approx(manifest_true, abs=2e-3) and true < 0.02
    wrong = open_bag_sequence(_bag_item(bag, camera_frame="camera_link"))
    assert _photo(_item(wrong), depth) > 2.5 * true


def test_select_targets_skips_and_counts() -> None:
    poses = np.tile(np.eye(4), (10, 1, 1))
    x = [0.0, 0.1, 0.2, 0.2, 0.2, 0.3, 0.4, 2.0, 2.1, 2.2]       # stands still at 2-4, jumps at 7
    poses[:, 0, 3] = x
    targets, counts = select_targets(poses, (-1, 1), 0.05, 0.5, 20.0)
    assert targets == [1, 5, 8] and counts == {"used": 3, "edge": 2, "too_small": 3, "too_large": 2}
    spin = poses.copy()
    spin[4, :3, :3] = so3_exp(torch.tensor([[0.0, 0.0, math.radians(30)]], dtype=torch.float64))[0].numpy()
    spin[4, 0, 3] = 0.25
    _, counts = select_targets(spin, (-1, 1), 0.01, 0.5, 20.0)   # turned 30 degrees in one frame
    assert counts["too_large"] >= 3


def test_poses_txt_round_trip_and_refusals(tmp_path: Path) -> None:
    P = np.stack([transform((i, 2 * i, 0.5), (0.1 * i, 0.2, 0.0, 1.0)) for i in range(4)])
    path = write_poses_txt(tmp_path / "poses.txt", P)
    np.testing.assert_allclose(read_poses_txt(path), P, atol=1e-12)
    bad = P.copy()
    bad[1, :3, :3] *= 1.1                                      # a scaled rotation is not rigid
    (tmp_path / "bad.txt").write_text("\n".join(" ".join(map(str, m.reshape(-1))) for m in bad))
    with pytest.raises(InputError, match="pose 1 is not a rigid"):
        read_poses_txt(tmp_path / "bad.txt")
    (tmp_path / "short.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(InputError, match="16 numbers"):
        read_poses_txt(tmp_path / "short.txt")


# ----------------------------------------------------------------------------- pose refinement

def test_refine_pose_keeps_the_metric_translation() -> None:
    g = torch.Generator().manual_seed(3)
    T = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    T[:, :3, :3] = so3_exp(torch.randn(5, 3, generator=g, dtype=torch.float64) * 0.2)
    T[:, :3, 3] = torch.randn(5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(refine_pose(T, torch.zeros(5, 6, dtype=torch.float64)), T, rtol=0, atol=1e-15)
    out = refine_pose(T, torch.randn(5, 6, generator=g, dtype=torch.float64) * 0.3)
    torch.testing.assert_close(out[:, :3, 3].norm(dim=1), T[:, :3, 3].norm(dim=1))
    R = out[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3))


def test_pose_refinement_corrects_a_rotation_error(trajectories: dict[int, Path]) -> None:
    """Odometry off by 1.5 degrees of yaw on both pairs: optimising the refiner alone (true
    depth) lowers the photometric loss and brings the rotation back towards the truth."""
    folder = trajectories[SEEDS[1]]
    item = _item(open_manifest_sequence(f"manifest:{folder}"))
    depth = torch.from_numpy(_gt_depth(folder, TARGET))[None, None]
    err = torch.eye(4)
    err[:3, :3] = so3_exp(torch.tensor([[0.0, math.radians(1.5), 0.0]]))[0]
    noisy = dict(item, T=err @ item["T"])
    refiner = PoseRefiner(10)
    opt = torch.optim.Adam(refiner.parameters(), lr=2e-3)
    pair, flipped = item["pair"][None], item["flipped"][None]

    def angle_error(T: torch.Tensor) -> float:
        d = T[0, :, :3, :3] @ item["T"][:, :3, :3].transpose(1, 2)
        return float(torch.rad2deg(torch.arccos(((d.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))).max())

    first = None
    for _ in range(60):
        T, prior = refiner(noisy["T"][None], pair, flipped)
        terms, _ = selfsup_losses([depth], _batch(noisy, T[0]), smoothness=0.0, automask=False)
        loss = terms["photo"] + 0.01 * prior
        first = float(terms["photo"].detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    T, _ = refiner(noisy["T"][None], pair, flipped)
    last, _ = selfsup_losses([depth], _batch(noisy, T[0].detach()), smoothness=0.0, automask=False)
    assert first is not None and float(last["photo"]) < 0.7 * first
    assert angle_error(T.detach()) < 0.5 * angle_error(noisy["T"][None])
    torch.testing.assert_close(T[0, :, :3, 3].norm(dim=1), item["T"][:, :3, 3].norm(dim=1))


# ----------------------------------------------------------------------------- the stage

def _config(tmp: Path, folder: Path, **selfsup: object) -> Path:
    cfg = {
        "model": {"arch": "small", "input_height": 64, "input_width": 80, "n_bins": 16},
        "data": {"train": [{"spec": f"manifest:{folder}", "weight": 1.0}], "workers": 0,
                 "val": {"traj": f"manifest:{folder}?frames=0:3"}, "val_frames": 3},
        "augment": {"crop_hw": [48, 64]},
        "train": {"stage": "selfsup", "steps": 4, "batch_size": 2, "lr": 1e-3, "threads": 1, "log_every": 1,
                  "eval_every": 100, "ckpt_every": 1, "backbone_lr_mult": 1.0},
        "selfsup": {"sequences": [{"spec": f"manifest:{folder}"}], "min_translation": 0.05, **selfsup},
    }
    path = tmp / "selfsup.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_selfsup_stage_trains_logs_and_resumes_exactly(trajectories: dict[int, Path], tmp_path: Path) -> None:
    """Pose refinement and a supervised mix on: 4 steps straight == 2 steps + --resume."""
    cfg = _config(tmp_path, trajectories[SEEDS[0]], refine_poses=True, supervised_weight=0.5)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--config", str(cfg), "--out", str(a)]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(b), "--stop-at", "2"]) == 0
    assert main(["train", "--resume", str(b / "latest.pt"), "--out", str(b)]) == 0
    ca, cb = (torch.load(x / "latest.pt", weights_only=True) for x in (a, b))
    assert ca["step"] == cb["step"] == 4 and ca["stage"] == "selfsup"
    for k in ca["model"]:
        torch.testing.assert_close(ca["model"][k], cb["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(ca["pose_refine"], cb["pose_refine"])
    assert float(ca["pose_refine"].abs().max()) > 0                      # the refiner learned something
    rows = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert all({"photo", "smooth", "pose_prior", "sup_silog", "kept"} <= set(r) for r in train_rows)
    assert all(0 < r["photo"] < 0.5 and 0 <= r["kept"] <= 1 for r in train_rows)
    frames = next(r["selfsup_frames"] for r in rows if "selfsup_frames" in r)
    _, counts = select_targets(read_poses_txt(trajectories[SEEDS[0]] / "poses.txt"), (-1, 1), 0.05, 0.6, 25.0)
    assert frames == {"frames": N, "no_pose": 0, **counts} and frames["used"] >= 1 and frames["edge"] == 2
    rb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [r["loss"] for r in rb] == pytest.approx([r["loss"] for r in train_rows], rel=1e-5)
    assert (a / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_selfsup_adapts_the_init_model_as_it_is(trajectories: dict[int, Path], tmp_path: Path,
                                                tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The config's model section (96x128, 32 bins) gives way to the --init checkpoint's
    (64x80, 16 bins), so one robot config fits whichever model it adapts."""
    cfg = _config(tmp_path, trajectories[SEEDS[0]], supervised_weight=0.0)
    raw = yaml.safe_load(cfg.read_text())
    raw["model"] = {"arch": "small", "input_height": 96, "input_width": 128, "n_bins": 32}
    raw["train"]["steps"] = 1
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "ft"
    assert main(["train", "--config", str(cfg), "--init", str(tiny_model_dir / "tiny.pt"), "--out", str(out)]) == 0
    assert "model section taken from" in capsys.readouterr().err
    ck = torch.load(out / "latest.pt", weights_only=True)
    assert (ck["meta"]["input_height"], ck["meta"]["n_bins"]) == (64, 16)
    assert json.loads(ck["config"])["model"]["n_bins"] == 16        # so --resume rebuilds the same network
    assert main(["train", "--resume", str(out / "latest.pt"), "--out", str(out), "--steps", "2"]) == 0


def test_selfsup_learns_from_colour_and_poses_only(trajectories: dict[int, Path]) -> None:
    """The video frames reach the loss with depth all zero: nothing of the depth leaks in."""
    seq = open_manifest_sequence(f"manifest:{trajectories[SEEDS[0]]}?frames=1:5")
    assert len(seq.frames) == 4 and all(not seq.frames[i].depth.any() for i in range(4))
    np.testing.assert_allclose(seq.poses, read_poses_txt(trajectories[SEEDS[0]] / "poses.txt")[1:5])


def test_selfsup_config_refusals(trajectories: dict[int, Path], tmp_path: Path) -> None:
    folder = trajectories[SEEDS[0]]
    cfg = _config(tmp_path, folder)
    assert load_config(cfg).selfsup.sequences[0].odom_topic == "/odom"
    with pytest.raises(InputError, match="selfsup.sequences"):
        load_config(cfg, ["selfsup.sequences=[]"])
    with pytest.raises(InputError, match="unknown keys"):
        load_config(cfg, [f"selfsup.sequences=[{{spec: 'manifest:{folder}', odom: /x}}]"])
    with pytest.raises(InputError, match="extrinsic"):
        load_config(cfg, [f"selfsup.sequences=[{{spec: 'manifest:{folder}', extrinsic: [0, 0, 0, 0, 0, 0, 0]}}]"])
    with pytest.raises(InputError, match="source_offsets"):
        load_config(cfg, ["selfsup.source_offsets=[0, 1]"])
    with pytest.raises(InputError, match="supervised_weight"):
        load_config(cfg, ["selfsup.supervised_weight=1", "data.train=[]"])
    no_poses = tmp_path / "no_poses"
    no_poses.mkdir()
    (no_poses / "manifest.json").write_text((folder / "manifest.json").read_text())
    with pytest.raises(InputError, match="poses.txt"):
        open_manifest_sequence(f"manifest:{no_poses}")
