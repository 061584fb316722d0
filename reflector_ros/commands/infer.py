"""`reflector infer`: metric depth for image files, folders, videos and ROS 2 bags, offline.

For users who want depth maps and point clouds without running a ROS graph:
the same backends as the node, the same metric convention, files out.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import backproject, ray_table
from reflector_ros.core.rectify import RECTIFY_SETTINGS, Calibration, Plan, calibration_at, plan, rectify
from reflector_ros.train.camera_yaml import MAX_SIDE, Pinhole, check_pinhole, load_camera_yaml, load_lens_yaml

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_EXT = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}
BAG_EXT = {".mcap", ".db3"}

class Source(NamedTuple):
    """What a bag says about a frame: its camera_info at the frame's size, and its topic."""
    cal: Calibration | None
    topic: str


Frame = tuple[str, np.ndarray, Source | None]  # stem, RGB uint8, the bag's word on it


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders of images, videos, or ROS 2 bags (folder with metadata.yaml, .mcap, .db3)")
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--camera-info", help="ROS camera_calibration YAML with the intrinsics")
    p.add_argument("--rectify", default="auto", choices=RECTIFY_SETTINGS,
                   help="undistort with the calibration's distortion first, as the node does; auto: unless a "
                        "bag's image topic is named as rectified (image_rect). The depth is in the "
                        "calibration's P camera either way")
    p.add_argument("--fx", type=float)
    p.add_argument("--fy", type=float)
    p.add_argument("--cx", type=float)
    p.add_argument("--cy", type=float)
    p.add_argument("--model", help="model file (.onnx, .pt, .engine); default: the embedded model")
    p.add_argument("--backend", default="auto", help="auto|tensorrt|torch|torch-cpu|torch-cuda|onnxruntime|onnxruntime-cuda")
    p.add_argument("--npy", action="store_true", help="also write float32 metres as .npy (NaN invalid)")
    p.add_argument("--preview", action="store_true", help="also write a colourised <stem>_preview.png")
    p.add_argument("--ply", action="store_true", help="also write a binary PLY point cloud (xyz + rgb)")
    p.add_argument("--image-topic", help="bag image topic (default: the only image topic)")
    p.add_argument("--camera-info-topic", help="bag camera_info topic (default: beside the image topic)")
    p.add_argument("--every", type=int, default=1, help="keep every N-th frame of videos and bags")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")


def intrinsics_from_args(args: argparse.Namespace) -> Pinhole | None:
    """Intrinsics the user gave: a YAML file, or --fx/--fy/--cx/--cy (size filled per image)."""
    flags = [args.fx, args.fy, args.cx, args.cy]
    if args.camera_info and any(v is not None for v in flags):
        raise InputError("give either --camera-info or --fx/--fy/--cx/--cy, not both")
    if args.camera_info:
        return load_camera_yaml(args.camera_info)
    if any(v is not None for v in flags):
        if args.fx is None:
            raise InputError("--fx is required with --fy/--cx/--cy")
        fy = args.fy if args.fy is not None else args.fx
        return Pinhole(args.fx, fy, -1.0 if args.cx is None else args.cx, -1.0 if args.cy is None else args.cy, 0, 0)
    return None


def resolve_intrinsics(given: Pinhole | None, w: int, h: int, what: str) -> Pinhole:
    """The user's intrinsics at this frame's size; a YAML of another size is rescaled."""
    p = given
    if p is None:
        raise InputError(f"{what}: no intrinsics; pass --camera-info FILE.yaml or --fx/--fy/--cx/--cy "
                         "(bags carry them on their camera_info topic)")
    if p.width == 0:  # from flags: principal point defaults to the centre
        p = Pinhole(p.fx, p.fy, (w - 1) / 2 if p.cx < 0 else p.cx, (h - 1) / 2 if p.cy < 0 else p.cy, w, h)
    elif (p.width, p.height) != (w, h):
        if abs(p.width / p.height - w / h) > 0.02 * (w / h):
            print(f"warning: {what}: image {w}x{h} and calibration {p.width}x{p.height} differ in aspect; "
                  "scaling anyway", file=sys.stderr)
        p = p.scaled_to(w, h)
    return check_pinhole(p)


def frame_camera(given: Pinhole | None, lens: Calibration | None, source: Source | None, w: int, h: int,
                 setting: str, what: str, plans: dict[tuple[Calibration, str], Plan]) -> tuple[Pinhole, Plan | None]:
    """The pinhole camera the depth lives in, and how to rectify the frame (None: use it as
    it is). The user's --camera-info or flags win over a bag's camera_info; a calibration
    is planned once (``plans`` caches it, with its one warning) as the node does."""
    if lens is not None:
        resolve_intrinsics(given, w, h, what)   # the same checks and aspect warning as K alone
        cal = calibration_at(lens.k, lens.d, lens.r, lens.p, lens.model, (lens.width, lens.height), (w, h))
    elif given is not None or source is None or source.cal is None:
        return resolve_intrinsics(given, w, h, what), None
    else:
        cal = source.cal
    key = (cal, source.topic if source is not None else "")
    if key not in plans:
        plans[key] = plan(cal, setting, key[1])
        if plans[key].warning:
            print(f"warning: {what}: {plans[key].warning}", file=sys.stderr)
    return check_pinhole(Pinhole(*astuple(plans[key].intrinsics))), plans[key]


def _check_size(w: int, h: int, what: str) -> None:
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise InputError(f"{what}: frame size {w}x{h} is not supported (1..{MAX_SIDE} per side)")


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 of an image file; 16-bit and grey images are converted."""
    if path.stat().st_size > 512 * 1024 * 1024:
        raise InputError(f"{path}: file larger than 512 MB, refusing")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: not a readable image")
    _check_size(img.shape[1], img.shape[0], str(path))
    if img.dtype != np.uint8:
        img = (img / 257).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").exists()) or path.suffix.lower() in BAG_EXT


def iter_video(path: Path, every: int) -> Iterator[Frame]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"{path}: not a readable video")
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_size(w, h, str(path))
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield f"{path.stem}_{i:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None
            i += 1
        if i == 0:
            raise InputError(f"{path}: video has no decodable frames")
    finally:
        cap.release()


def bag_topics(path: Path, image_topic: str | None, info_topic: str | None) -> tuple[str, str | None]:
    """Pick the image topic (the only one, unless named) and its sibling camera_info."""
    from reflector_ros.data.rosbag import CAMERA_INFO, COMPRESSED, IMAGE, bag_topic_types

    types = bag_topic_types(path)
    if image_topic is None:
        images = sorted(t for t, ty in types.items() if ty in (IMAGE, COMPRESSED))
        if len(images) != 1:
            raise InputError(f"{path}: pass --image-topic; image topics in the bag: {images or 'none'}")
        image_topic = images[0]
    if info_topic is None:
        ns = image_topic.rsplit("/", 1)[0]
        infos = sorted(t for t, ty in types.items() if ty == CAMERA_INFO)
        sibling = [t for t in infos if t.rsplit("/", 1)[0] == ns]
        choices = sibling or (infos if len(infos) == 1 else [])
        info_topic = choices[0] if choices else None
    return image_topic, info_topic


def iter_bag(path: Path, image_topic: str | None, info_topic: str | None, every: int) -> Iterator[Frame]:
    from reflector_ros.data.rosbag import iter_bag_images

    image_topic, info_topic = bag_topics(path, image_topic, info_topic)
    for i, (stamp_ns, rgb, cal) in enumerate(iter_bag_images(path, image_topic, info_topic)):
        if i % every == 0:
            yield f"{path.stem}_{stamp_ns}", rgb, Source(cal, image_topic)


def iter_inputs(inputs: list[str], every: int = 1, image_topic: str | None = None,
                info_topic: str | None = None) -> Iterator[Frame]:
    """Every frame of every input, in order; unreadable inputs raise InputError."""
    if every < 1:
        raise InputError("--every must be >= 1")
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if is_bag(path):
            yield from iter_bag(path, image_topic, info_topic, every)
        elif path.is_dir():
            files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXT)
            if not files:
                raise InputError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXT))})")
            for f in files:
                yield f.stem, read_image(f), None
        elif path.suffix.lower() in VIDEO_EXT:
            yield from iter_video(path, every)
        elif path.suffix.lower() in IMAGE_EXT:
            yield path.stem, read_image(path), None
        else:
            raise InputError(f"{path}: unknown input type (images {sorted(IMAGE_EXT)}, videos {sorted(VIDEO_EXT)}, "
                             "bags: folder with metadata.yaml, .mcap, .db3)")


def depth_to_png_mm(depth: np.ndarray) -> np.ndarray:
    """uint16 millimetres, 0 invalid (the 16UC1 depth convention of ROS)."""
    ok = np.isfinite(depth) & (depth > 0) & (depth < 65.535)
    return np.where(ok, np.round(np.where(ok, depth, 0) * 1000.0), 0).astype(np.uint16)


def colourise(depth: np.ndarray) -> np.ndarray:
    """BGR preview: inverse depth through TURBO (near = red), invalid black."""
    ok = np.isfinite(depth) & (depth > 0)
    out = np.zeros(depth.shape + (3,), np.uint8)
    if not ok.any():
        return out
    inv = np.where(ok, 1.0 / np.where(ok, depth, 1.0), 0.0)
    lo, hi = np.percentile(inv[ok], [2, 98])
    norm = np.clip((inv - lo) / max(hi - lo, 1e-9), 0, 1)
    col = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    out[ok] = col[ok]
    return out


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> int:
    """Binary little-endian PLY of the valid points; returns the point count."""
    ok = np.isfinite(xyz).all(-1) & (xyz[..., 2] > 0)
    rec = np.zeros(int(ok.sum()), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                         ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    pts, cols = xyz[ok], rgb[ok]
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rec["red"], rec["green"], rec["blue"] = cols[:, 0], cols[:, 1], cols[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\ncomment reflector_ros metric depth, optical frame\n"
              f"element vertex {len(rec)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())
    return len(rec)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from reflector_ros.backends import make_backend
    from reflector_ros.meta import focal_scale

    try:
        given = intrinsics_from_args(args)
        lens = load_lens_yaml(args.camera_info) if args.camera_info else None
        plans: dict[tuple[Calibration, str], Plan] = {}
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        backend = make_backend(args.backend, args.model)
        used: set[str] = set()
        n = 0
        for stem, rgb, src in tqdm(iter_inputs(args.inputs, args.every, args.image_topic, args.camera_info_topic),
                                   desc="infer", unit="frame"):
            h, w = rgb.shape[:2]
            pin, how = frame_camera(given, lens, src, w, h, args.rectify, stem, plans)
            seen = None
            if how is not None and how.maps is not None:
                rgb, seen = rectify(rgb, *how.maps), how.seen
            name, k = stem, 1
            while name in used:
                name, k = f"{stem}_{k}", k + 1
            used.add(name)
            res = backend.run(rgb, focal_scale(pin.fx, pin.fy, w, h, backend.meta), (h, w))
            depth = res.depth.astype(np.float32)
            if seen is not None:
                depth[~seen] = np.nan   # the lens never saw these rectified pixels
            cv2.imwrite(str(out / f"{name}.png"), depth_to_png_mm(depth))
            if args.npy:
                np.save(out / f"{name}.npy", depth)
            if args.preview:
                cv2.imwrite(str(out / f"{name}_preview.png"), colourise(depth))
            if args.ply:
                write_ply(out / f"{name}.ply", backproject(depth, ray_table(pin.intrinsics())), rgb)
            n += 1
            if args.max_frames and n >= args.max_frames:
                break
    except (ValueError, FileNotFoundError) as exc:  # InputError is a ValueError
        print(f"reflector infer: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} depth maps to {out}")
    return 0
