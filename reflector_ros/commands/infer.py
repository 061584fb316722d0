"""`reflector infer`: metric depth for image files, folders, videos and ROS 2 bags, offline.

For users who want depth maps and point clouds without running a ROS graph: the same
frame pipeline as the node (reflector_ros.pipeline), the same metric convention, files out.
Pixels are read as stored (EXIF orientation is ignored): drivers and calibrations work on
stored pixels, so a rotated view would not match its calibration.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from reflector_ros.commands import Once
from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.camera_info import CameraInfoFields, aspect_note, calibrated_size
from reflector_ros.core.camera_yaml import load_camera_yaml
from reflector_ros.core.decode import image_size_from_header
from reflector_ros.core.depth import colorize, to_millimetres
from reflector_ros.core.errors import InputError
from reflector_ros.core.scale_anchor import AnchorSettings
from reflector_ros.core.limits import check_size
from reflector_ros.core.rectify import RECTIFY_SETTINGS
from reflector_ros.ros.params import PARAMS

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_EXT = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}
BAG_EXT = {".mcap", ".db3"}
SKIP_WARNINGS = 10   # skipped files listed one by one; the rest are counted


class Source(NamedTuple):
    """What a bag says about a frame: its camera_info (None: none yet), and its topic."""
    camera: CameraInfoFields | None
    topic: str


class Frame(NamedTuple):
    stem: str
    rgb: np.ndarray                 # RGB uint8
    source: Source | None           # the bag's word on it
    t: float | None = None          # seconds, for frames of one sequence (video, bag); None: a lone image


class Skip(NamedTuple):
    """A file or input that gave no frame, and why (the run goes on without it)."""
    what: str
    reason: str


class Flags(NamedTuple):
    """--fx/--fy/--cx/--cy; a principal point not given is the centre of each frame."""
    fx: float
    fy: float
    cx: float | None
    cy: float | None

    def at(self, width: int, height: int) -> Intrinsics:
        centre = Intrinsics.centred(self.fx, width, height)   # the principal point where none is given
        return replace(centre, fy=self.fy, cx=centre.cx if self.cx is None else self.cx,
                       cy=centre.cy if self.cy is None else self.cy).checked()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders of images, videos, or ROS 2 bags (folder with metadata.yaml, .mcap, .db3)")
    p.add_argument("--output", "-o", required=True, help="output folder")
    p.add_argument("--camera-info", help="ROS camera_calibration YAML with the intrinsics (for the stored pixels)")
    p.add_argument("--scale-calibration", action="store_true",
                   help="accept a --camera-info calibration of another aspect ratio than the images and stretch it "
                        "(refused otherwise: it usually belongs to another camera mode)")
    p.add_argument("--rectify", default="auto", choices=RECTIFY_SETTINGS,
                   help="undistort with the calibration's distortion first, as the node does; auto: unless a "
                        "bag's image topic is named as rectified (image_rect). The depth is in the "
                        "calibration's P camera either way")
    p.add_argument("--fx", type=float, help="focal length in pixels of the stored images (instead of --camera-info)")
    p.add_argument("--fy", type=float, help="vertical focal length in pixels (default: --fx)")
    p.add_argument("--cx", type=float, help="principal point x in pixels (default: the image centre)")
    p.add_argument("--cy", type=float, help="principal point y in pixels (default: the image centre)")
    p.add_argument("--model", action=Once, help="model file (.onnx, .pt, .engine); default: the embedded model")
    p.add_argument("--backend", default="auto",
                   help="auto|tensorrt|torch|torch-cpu|torch-cuda|onnxruntime|onnxruntime-cuda (default: auto)")
    p.add_argument("--min-depth", type=float, default=PARAMS["min_depth"][0],
                   help="metres; nearer depth is invalid (default: the node's, %(default)s)")
    p.add_argument("--max-depth", type=float, default=PARAMS["max_depth"][0],
                   help="metres; farther depth is invalid (default: the node's, %(default)s)")
    p.add_argument("--npy", action="store_true", help="also write float32 metres as .npy (NaN invalid); always "
                   "written: <stem>.png, 16-bit millimetres with 0 invalid (REP 118)")
    p.add_argument("--preview", action="store_true", help="also write a colourised <stem>_preview.png")
    p.add_argument("--ply", action="store_true", help="also write a binary PLY point cloud (xyz + rgb)")
    p.add_argument("--camera-height", type=float, default=None,
                   help="metres from the floor to the camera, 0.02-20: fix the metric scale from the floor in view "
                        "(the node's scale_anchor.mode floor); frames of a video or bag are smoothed over time")
    p.add_argument("--camera-pitch", type=float, default=0.0, help="expected camera pitch, degrees, -89..89, positive down (default: 0)")
    p.add_argument("--camera-roll", type=float, default=0.0, help="expected camera roll, degrees, -180..180 (default: 0)")
    p.add_argument("--anchor-tolerance", type=float, default=35.0,
                   help="largest angle (degrees, 1-80) between the floor normal and the expected up (default: 35)")
    p.add_argument("--anchor-normal", choices=("fitted", "expected"), default="fitted",
                   help="measure the floor distance along the fitted plane's normal (default), or along the "
                        "expected up from --camera-pitch/--camera-roll (set them right; robust to a tilted floor)")
    p.add_argument("--anchor-max-correction", type=float, default=1.5,
                   help="largest factor (1.05-10) either way by which the floor may correct the network's scale (default: 1.5)")
    p.add_argument("--anchor-min-inliers", type=float, default=0.2,
                   help="fraction (0.01-1) of the sampled lower-view points the floor must hold; lower engages more often (default: 0.2)")
    p.add_argument("--anchor-window", type=int, default=3,
                   help="frames (1-1000) whose median outvotes one odd frame's floor scale (default: 3)")
    p.add_argument("--image-topic", help="bag image topic (default: the only image topic whose name does not say depth)")
    p.add_argument("--camera-info-topic", help="bag camera_info topic (default: beside the image topic)")
    p.add_argument("--every", type=int, default=1, help="keep every N-th frame of each video, bag or folder (default: 1)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after writing this many frames (default 0: all)")


def camera_from_args(args: argparse.Namespace) -> CameraInfoFields | Flags | None:
    """The calibration the user gave: a YAML file, or --fx/--fy/--cx/--cy."""
    flags = [args.fx, args.fy, args.cx, args.cy]
    if args.camera_info and any(v is not None for v in flags):
        raise InputError("give either --camera-info or --fx/--fy/--cx/--cy, not both")
    if args.camera_info:
        return load_camera_yaml(args.camera_info)
    if any(v is not None for v in flags):
        if args.fx is None:
            raise InputError("--fx is required with --fy/--cx/--cy")
        named = {"--fx": args.fx, "--fy": args.fy, "--cx": args.cx, "--cy": args.cy}
        bad = [f"{k} {v}" for k, v in named.items() if v is not None and not math.isfinite(v)]
        bad += [f"{k} {v}" for k, v in named.items() if k in ("--fx", "--fy") and v is not None and v <= 0]
        if bad:
            raise InputError(f"{', '.join(bad)}: focal lengths must be positive and every value a finite number of pixels")
        return Flags(args.fx, args.fy if args.fy is not None else args.fx, args.cx, args.cy)
    return None


def frame_camera(given: CameraInfoFields | Flags | None, source: Source | None, w: int, h: int,
                 scale_calibration: bool) -> tuple[CameraInfoFields | Intrinsics, str]:
    """The camera of one frame and the topic name for rectify's auto rule. The user's
    --camera-info or flags win over a bag's camera_info. A YAML calibration of another
    aspect ratio is refused unless --scale-calibration (the same rule the node warns with)."""
    if isinstance(given, Flags):
        return given.at(w, h), ""
    if isinstance(given, CameraInfoFields):
        note = aspect_note(calibrated_size(given, (w, h)), (w, h))
        if note and not scale_calibration:
            raise InputError(f"{note}. Pass --scale-calibration to stretch it anyway")
        return given, ""
    if source is not None and source.camera is not None:
        return source.camera, source.topic
    raise InputError("no intrinsics; pass --camera-info FILE.yaml or --fx/--fy/--cx/--cy "
                     "(bags carry them on their camera_info topic)")


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 of an image file, pixels as stored (no EXIF rotation). 8-bit grey is
    expanded, 16-bit colour scaled to 8 bits, alpha dropped. InputError for what is not a
    colour photo: empty, unreadable or truncated files, single-channel 16-bit or float
    images (depth maps), and sizes over the limit, which for PNG and JPEG are read from the
    header (the node's reader) before any pixel is decoded."""
    if path.stat().st_size > 512 * 1024 * 1024:
        raise InputError(f"{path}: file larger than 512 MB, refusing")
    data = path.read_bytes()
    if not data:
        raise InputError(f"{path}: empty file")
    buf = np.frombuffer(data, np.uint8)
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:2] == b"\xff\xd8":
        try:
            _, width, height = image_size_from_header(buf)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        check_size(width, height, str(path))
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data:   # 0xFF is stuffed in scan data: FF D9 is the marker
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker)")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        img = None
    if img is None:
        raise InputError(f"{path}: not a readable image")
    check_size(img.shape[1], img.shape[0], str(path))
    channels = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype not in (np.uint8, np.uint16) or (img.dtype == np.uint16 and channels == 1):
        raise InputError(f"{path}: {channels}-channel {img.dtype} image (a depth map?) is not colour input")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    if channels == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if channels == 4 else cv2.COLOR_BGR2RGB)


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").exists()) or path.suffix.lower() in BAG_EXT


def iter_video(path: Path, every: int) -> Iterator[Frame]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"{path}: not a readable video")
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        check_size(w, h, str(path))
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield Frame(f"{path.stem}_{i:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None, i / fps)
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
        colour = [t for t in images if "depth" not in t.lower()]   # an RGB-D recording's depth is no input
        if len(colour) == 1:
            images = colour
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
    for i, (stamp_ns, rgb, fields) in enumerate(iter_bag_images(path, image_topic, info_topic)):
        if i % every == 0:
            yield Frame(f"{path.stem}_{stamp_ns}", rgb, Source(fields, image_topic), stamp_ns / 1e9)


def check_inputs(inputs: list[str], output: Path) -> None:
    """Before anything runs: every input exists and is of a known kind, and the output folder
    is no input folder (its depth PNGs would overwrite or join the images)."""
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        known = is_bag(path) or path.is_dir() or path.suffix.lower() in VIDEO_EXT | IMAGE_EXT
        if not known:
            raise InputError(f"{path}: unknown input type (images {sorted(IMAGE_EXT)}, videos {sorted(VIDEO_EXT)}, "
                             "bags: folder with metadata.yaml, .mcap, .db3)")
        folder = path if path.is_dir() else path.parent
        images_there = path.is_dir() or path.suffix.lower() in IMAGE_EXT
        if not is_bag(path) and images_there and output.resolve() == folder.resolve():
            raise InputError(f"--output {output} is where the input images are: the depth PNGs would overwrite "
                             f"or mix with them; choose another output folder")
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file, not a folder")


def iter_inputs(inputs: list[str], every: int = 1, image_topic: str | None = None,
                info_topic: str | None = None) -> Iterator[Frame | Skip]:
    """Every frame of every input, in order. A file that cannot be read, or a video or bag
    that fails, is a Skip with the reason, and the rest goes on. ``check_inputs`` first."""
    lone = 0   # image files given one by one (a shell glob) are a sequence for --every too
    for raw in inputs:
        path = Path(raw)
        if path.is_dir() and not is_bag(path):
            files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXT)
            if not files:
                yield Skip(str(path), f"folder holds no images ({', '.join(sorted(IMAGE_EXT))})")
            for f in files[::every]:
                yield _image_frame(f)
        elif path.suffix.lower() in IMAGE_EXT and not path.is_dir():
            if lone % every == 0:
                yield _image_frame(path)
            lone += 1
        else:
            frames = iter_bag(path, image_topic, info_topic, every) if is_bag(path) else iter_video(path, every)
            try:
                yield from frames
            except InputError as exc:
                yield Skip(str(path), _without(str(exc), path))


def _image_frame(path: Path) -> Frame | Skip:
    try:
        return Frame(path.stem, read_image(path), None)
    except InputError as exc:
        return Skip(str(path), _without(str(exc), path))


def _without(message: str, path: Path) -> str:
    """The message without its leading path (the skip line names the file already)."""
    return message.removeprefix(str(path)).lstrip(": ") if message.startswith(str(path)) else message


PREVIEW_MIN_SPAN = 0.05     # metres: a flatter frame is drawn over at least this range


def preview(depth: np.ndarray) -> np.ndarray:
    """BGR preview over the frame's own 2-98 % depth range (core.depth.colorize: near = warm;
    at least PREVIEW_MIN_SPAN wide), with that range's key in metres under it: (h + 40, w, 3)."""
    from reflector_ros.core.depth import depth_legend

    ok = np.isfinite(depth)
    if not ok.any():
        return np.zeros((depth.shape[0] + 40, depth.shape[1], 3), np.uint8)
    lo, hi = (float(v) for v in np.percentile(depth[ok], [2, 98]))
    if hi - lo < PREVIEW_MIN_SPAN:
        lo = max(0.0, 0.5 * (lo + hi - PREVIEW_MIN_SPAN))
        hi = lo + PREVIEW_MIN_SPAN
    return np.concatenate([colorize(depth, lo, hi), depth_legend(depth.shape[1], lo, hi)], axis=0)


def write_ply(path: Path, cloud: np.ndarray) -> int:
    """Binary little-endian PLY of the valid points of a packed cloud ((h, w, 4) float32:
    x, y, z, 0x00RRGGBB bits, as the node's PointCloud2); returns the point count."""
    ok = np.isfinite(cloud[..., 2])
    rec = np.zeros(int(ok.sum()), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                         ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    pts = cloud[ok]
    bits = np.ascontiguousarray(pts[:, 3]).view(np.uint32)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rec["red"], rec["green"], rec["blue"] = (bits >> 16) & 255, (bits >> 8) & 255, bits & 255
    header = ("ply\nformat binary_little_endian 1.0\ncomment reflector_ros metric depth, optical frame\n"
              f"element vertex {len(rec)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())
    return len(rec)


def run(args: argparse.Namespace) -> int:
    try:
        n, out, skipped = _infer_all(args)
    except (ValueError, OSError) as exc:  # InputError is a ValueError
        print(f"reflector infer: error: {exc}", file=sys.stderr)
        return 2
    extra = f" (scale per frame in {out / 'scale_anchor.csv'})" if args.camera_height is not None and n else ""
    print(f"wrote {n} depth map{'s' if n != 1 else ''} to {out}{extra}")
    if skipped:
        print(f"skipped {len(skipped)}: " + "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else ""),
              file=sys.stderr)
        return 2 if n == 0 else 1
    return 0


NAME_MAX = 255                                   # bytes in one file name (Linux, macOS, NTFS in UTF-16 units)
LONGEST_SUFFIX = len("~99999_preview.png")


def output_name(stem: str, used: set[str]) -> str:
    """A name no earlier frame's files (<name>.png/.npy/.ply, <name>_preview.png) use: the
    stem, else the stem and a number; reserves the name and its preview's. A stem too long
    for a file name once the suffixes are added is cut (at a character, not inside one) and
    numbered like any other repeat."""
    raw = os.fsencode(stem)            # the bytes the file system stores (a non-UTF-8 name round-trips)
    if len(raw) > NAME_MAX - LONGEST_SUFFIX:
        cut = raw[:NAME_MAX - LONGEST_SUFFIX]
        try:
            cut.decode("utf-8")
        except UnicodeDecodeError as exc:  # the cut split a multi-byte character: end before it
            if exc.reason == "unexpected end of data":
                cut = cut[:exc.start]
        stem = os.fsdecode(cut)
    name, k = stem, 1
    while name in used or f"{name}_preview" in used:
        name, k = f"{stem}~{k}", k + 1
    used.update((name, f"{name}_preview"))
    return name


def _write_png(path: Path, img: np.ndarray) -> None:
    """Encode with OpenCV, write with Python: OpenCV's own file writing crashes on a name that is
    not valid UTF-8, and says only "False" when the disk is full."""
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: could not be encoded as PNG")
    try:
        with open(path, "wb") as fh:
            fh.write(buf.tobytes())
    except OSError as exc:
        if path.is_file():
            path.unlink()                  # no half-written file left behind
        raise OSError(f"{path}: could not be written ({exc.strerror or exc})") from None


def _infer_all(args: argparse.Namespace) -> tuple[int, Path, list[str]]:
    """Every frame through the pipeline, files out; returns (frames written, output folder,
    what was skipped and why). A frame or file that cannot be used is skipped with a warning;
    options, the output folder and the backend are checked before the first frame."""
    from contextlib import ExitStack

    from tqdm import tqdm

    from reflector_ros.backends import open_backend
    from reflector_ros.pipeline import CloudSettings, DepthPipeline, FrameSettings

    given = camera_from_args(args)
    anchor = anchor_from_args(args)
    if args.every < 1 or args.max_frames < 0:
        raise InputError("--every must be >= 1 and --max-frames >= 0 (0: all)")
    if not (0 <= args.min_depth < args.max_depth <= 65.535):
        raise InputError(f"--min-depth and --max-depth must satisfy 0 <= min < max <= 65.535 metres (the 16-bit "
                         f"millimetre PNG's range), got {args.min_depth}, {args.max_depth}")
    out = Path(args.output)
    check_inputs(args.inputs, out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline = DepthPipeline(open_backend(args.backend, args.model))
    settings = FrameSettings(min_depth=args.min_depth, max_depth=args.max_depth, rectify=args.rectify,
                             cloud=CloudSettings(rgb=True) if args.ply else None, anchor=anchor)
    used: set[str] = set()
    n = 0
    skipped: list[str] = []
    sources: dict[str, int] = {}
    floor_scales: list[float] = []
    with ExitStack() as stack:
        scale_log = None
        if anchor.mode != "none":
            # frame names are file names, which need not be UTF-8: keep their bytes
            scale_log = stack.enter_context(open(out / "scale_anchor.csv", "w", encoding="utf-8",
                                                 errors="surrogateescape"))
            scale_log.write("frame,scale,source,floor_inliers\n")
        bar = stack.enter_context(tqdm(desc="infer", unit="frame"))

        def skip(what: str, reason: str) -> None:
            skipped.append(f"{what} ({reason})")
            if len(skipped) <= SKIP_WARNINGS:
                bar.write(f"warning: skipped {what}: {reason}", file=sys.stderr)
            if len(skipped) == SKIP_WARNINGS:
                bar.write("warning: further skipped files are counted, not listed", file=sys.stderr)
        for item in iter_inputs(args.inputs, args.every, args.image_topic, args.camera_info_topic):
            if isinstance(item, Skip):
                skip(item.what, item.reason)
                continue
            stem, rgb, src, t = item
            h, w = rgb.shape[:2]
            try:
                camera, topic = frame_camera(given, src, w, h, args.scale_calibration)
                if t is None:          # a lone image: no scale history carries over from the one before
                    pipeline.restarted()
                res = pipeline.process(rgb, camera, settings, topic, t=t or 0.0)
            except InputError as exc:
                skip(stem, str(exc))
                continue
            if res.new_plan:
                for note in res.plan.notes:
                    bar.write(f"warning: {stem}: {note}".replace("rectify:=false", "--rectify false"), file=sys.stderr)
            if scale_log is not None and res.anchor is not None:
                a = res.anchor
                scale_log.write(f"{stem},{a.scale:.5f},{a.source},{a.inlier_fraction:.3f}\n")
                sources[a.source] = sources.get(a.source, 0) + 1
                if a.source != "model":
                    floor_scales.append(a.scale)
            name = output_name(stem, used)
            _write_png(out / f"{name}.png", to_millimetres(res.depth))
            if args.npy:
                np.save(out / f"{name}.npy", res.depth)
            if args.preview:
                _write_png(out / f"{name}_preview.png", preview(res.depth))
            if args.ply and res.cloud is not None:
                write_ply(out / f"{name}.ply", res.cloud)
            n += 1
            bar.update(1)
            if args.max_frames and n >= args.max_frames:
                break
    if sources:
        total = sum(sources.values())
        median = f"; the floor's scale median {float(np.median(floor_scales)):.3f}" if floor_scales else ""
        print(f"scale anchor: floor in {sources.get('floor', 0)} of {total} frames, held in "
              f"{sources.get('held', 0)}, the network's own scale in {sources.get('model', 0)}{median}",
              file=sys.stderr)
    return n, out, skipped


ANCHOR_FLAGS = {"camera_height": "--camera-height", "pitch_deg": "--camera-pitch", "roll_deg": "--camera-roll",
                "tolerance_deg": "--anchor-tolerance", "normal": "--anchor-normal",
                "max_correction": "--anchor-max-correction", "min_inliers": "--anchor-min-inliers",
                "window": "--anchor-window"}


def anchor_from_args(args: argparse.Namespace) -> AnchorSettings:
    """The floor anchor's settings from the flags (mode none without --camera-height); the
    node's range checks, with the flags' names in the message."""
    defaults = AnchorSettings()
    changed = [flag for key, flag in ANCHOR_FLAGS.items()
               if key != "camera_height" and getattr(args, flag[2:].replace("-", "_")) != getattr(defaults, key)]
    if args.camera_height is None:
        if changed:
            print(f"warning: ignored without --camera-height: {', '.join(changed)}", file=sys.stderr)
        return AnchorSettings()
    settings = AnchorSettings(mode="floor", camera_height=args.camera_height, pitch_deg=args.camera_pitch,
                              roll_deg=args.camera_roll, tolerance_deg=args.anchor_tolerance,
                              normal=args.anchor_normal, max_correction=args.anchor_max_correction,
                              min_inliers=args.anchor_min_inliers, window=args.anchor_window)
    try:
        return settings.check()
    except InputError as exc:
        msg = str(exc)
        for key, flag in ANCHOR_FLAGS.items():
            msg = msg.replace(f"scale_anchor.{key}", flag)
        raise InputError(msg) from None

