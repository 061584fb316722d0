"""One frame's path, from an RGB frame and its calibration to depth, confidence and a cloud.

ROS-free: the node, `reflector infer`, `reflector eval` and `reflector bench` all call
``DepthPipeline.process``, so a frame is treated the same everywhere:

1. the calibration is read once per camera (``core.camera_info``) and planned once
   (``core.rectify.plan``: undistort or not, the camera the depth lives in, the pixels the
   lens never saw);
2. the raw frame is undistorted with that plan's maps (one remap);
3. the backend resizes it to the network input (``meta.network_input``: fixed, or
   following the camera for canonical-camera models) and runs the network;
4. the optional scale anchor (``core.scale_anchor``) fits the floor to the network's depth;
5. the backend resizes the depth to the output size, scales it, applies the validity
   rules (range, confidence, unseen pixels) and packs the cloud, on its own device.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from reflector_ros.backends.base import Backend
from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.camera_info import CameraInfoFields, aspect_note, read_calibration
from reflector_ros.core.depth import Validity
from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import CloudSpec, ray_lengths, ray_table
from reflector_ros.core.rectify import plan, rectify
from reflector_ros.core.scale_anchor import AnchorSettings, AnchorState, FloorAnchor
from reflector_ros.meta import NetInput, network_input

Camera = CameraInfoFields | Intrinsics   # a camera_info's fields, or plain intrinsics of the frame
Alloc = Callable[[str, tuple[int, ...]], np.ndarray]   # (name, shape) -> float32 array to write into


@dataclass(frozen=True)
class CloudSettings:
    """The PointCloud2's layout and point filters (metres along the ray, 0..1)."""
    stride: int = 1
    rgb: bool = True
    min_range: float = 0.0
    max_range: float = math.inf
    min_confidence: float = 0.0


@dataclass(frozen=True)
class FrameSettings:
    """Per-frame knobs; the node builds one from its parameters, infer from its flags."""
    output_scale: float = 1.0        # output size relative to the input frame, 0 < s <= 1
    min_depth: float = 0.0           # metres; depth outside [min_depth, max_depth] is NaN
    max_depth: float = math.inf
    min_confidence: float = 0.0      # 0..1; less confident depth is NaN
    rectify: str = "auto"            # auto | true | false (core.rectify.should_rectify)
    cloud: CloudSettings | None = None
    anchor: AnchorSettings = AnchorSettings()   # metric scale from the camera height (mode none: off)


@dataclass(frozen=True)
class FramePlan:
    """How the frames of one camera are treated; built once per calibration and size."""
    camera: Intrinsics                         # the pinhole camera the frame is in after rectification
    net: NetInput                              # network input size and focal scale
    maps: tuple[np.ndarray, np.ndarray] | None  # undistortion maps, or None: the frame as it is
    seen: np.ndarray | None                    # rectified pixels the lens saw (None: all)
    rectify_state: str                         # for logs and /diagnostics
    notes: tuple[str, ...] = ()                # things the user should hear once (lens, P-only, aspect)
    unseen_at: dict = field(default_factory=dict, compare=False, repr=False)   # output size -> mask


@dataclass
class FrameResult:
    depth: np.ndarray              # (h, w) float32 metres along optical Z, NaN invalid (REP 118)
    confidence: np.ndarray         # (h, w) float32 in [0, 1]
    camera: Intrinsics             # the output's camera: what depth/camera_info states
    rgb: np.ndarray                # (H, W, 3) uint8: the frame the network saw (rectified)
    cloud: np.ndarray | None       # (h', w', 4) float32 packed xyz(+rgb), NaN invalid, or None
    plan: FramePlan
    new_plan: bool                 # the first frame of this calibration: show plan.notes now
    anchor: AnchorState | None = None   # the scale applied and its source, when the anchor is on
    timings_ms: dict[str, float] = field(default_factory=dict)


def output_size(width: int, height: int, output_scale: float) -> tuple[int, int]:
    """(h, w) of the depth for a frame of width x height."""
    if not (0.0 < output_scale <= 1.0):
        raise InputError(f"output_scale must be in (0, 1], got {output_scale}")
    return max(1, int(round(height * output_scale))), max(1, int(round(width * output_scale)))


class DepthPipeline:
    """The per-frame path around one backend, with its caches keyed by calibration.

    Not thread-safe: one caller (the node's worker thread, infer's loop) at a time.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._plans: dict[tuple, FramePlan] = {}
        self._rays: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._anchor: FloorAnchor | None = None

    def anchor_for(self, settings: AnchorSettings) -> FloorAnchor | None:
        """The running scale anchor for these settings (rebuilt when they change), None when off."""
        if settings.mode == "none":
            self._anchor = None
        elif self._anchor is None or self._anchor.settings != settings:
            self._anchor = FloorAnchor(settings)
        return self._anchor

    def restarted(self) -> None:
        """A restarted source: per-source state (the anchor's scale history) starts again."""
        if self._anchor is not None:
            self._anchor.reset()

    # ------------------------------------------------------------------ once per calibration

    def plan(self, camera: Camera, width: int, height: int, setting: str = "auto", topic: str = "") -> FramePlan:
        """The FramePlan for frames of width x height from ``camera`` (cached; ~0.1 s at VGA
        to build undistortion maps the first time). ``topic`` feeds rectify's auto rule."""
        return self._lookup(camera, width, height, setting, topic)[0]

    def _lookup(self, camera: Camera, width: int, height: int, setting: str, topic: str) -> tuple[FramePlan, bool]:
        key = (camera, width, height, setting, topic)
        hit = self._plans.get(key)
        if hit is not None:
            return hit, False
        hit = self._plans[key] = self._build_plan(camera, width, height, setting, topic)
        if len(self._plans) > 8:   # a camera that keeps changing: keep the newest few
            self._plans.pop(next(iter(self._plans)))
        return hit, True

    def _build_plan(self, camera: Camera, width: int, height: int, setting: str, topic: str) -> FramePlan:
        notes: list[str] = []
        if isinstance(camera, Intrinsics):
            if (camera.width, camera.height) != (width, height):
                note = aspect_note((camera.width, camera.height), (width, height))
                if note:
                    notes.append(note)
                camera = camera.scaled(width, height)
            intr = camera.checked()
            return FramePlan(intr, network_input(intr, self.backend.meta), None, None,
                             "off (plain intrinsics, no distortion given)", tuple(notes))
        cal, cal_notes = read_calibration(camera, (width, height))
        notes.extend(cal_notes)
        how = plan(cal, setting, topic)
        if how.warning:
            notes.append(how.warning)
        intr = how.intrinsics.checked()
        return FramePlan(intr, network_input(intr, self.backend.meta), how.maps, how.seen, how.state, tuple(notes))

    def _unseen_mask(self, p: FramePlan, out_hw: tuple[int, int]) -> np.ndarray | None:
        """Output pixels the lens never saw (cached with the plan, per output size)."""
        if p.seen is None:
            return None
        hit = p.unseen_at.get(out_hw)
        if hit is None:
            small = cv2.resize(p.seen.astype(np.uint8), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)
            hit = p.unseen_at[out_hw] = small == 0
        return hit

    def _ray_table(self, camera: Intrinsics, stride: int) -> tuple[np.ndarray, np.ndarray]:
        """Rays and their lengths for the output camera (cached: intrinsics change rarely,
        so back-projection is one multiply per axis per frame)."""
        key = (camera, stride)
        hit = self._rays.get(key)
        if hit is None:
            rays = ray_table(camera, stride)
            hit = self._rays[key] = (rays, ray_lengths(rays))
            if len(self._rays) > 8:
                self._rays.pop(next(iter(self._rays)))
        return hit

    # ------------------------------------------------------------------ every frame

    def process(self, rgb: np.ndarray, camera: Camera, settings: FrameSettings, topic: str = "image",
                alloc: Alloc | None = None, t: float = 0.0, camera_height: float | None = None,
                camera_up: np.ndarray | None = None) -> FrameResult:
        """One frame: (H, W, 3) uint8 RGB as the camera produced it (raw or rectified, per
        ``settings.rectify`` and ``topic``) -> FrameResult. ``alloc(name, shape)`` gives the
        float32 arrays the depth ("depth", (h, w)) and the cloud ("cloud", (h', w', 4)) are
        written into (the node passes message buffers, so nothing is copied again). ``t``: the
        frame's time in seconds (the scale anchor's hold); ``camera_height`` (metres) and
        ``camera_up`` ((3,) world up in the optical frame) override the anchor's settings for
        this frame. InputError for frames or calibrations it cannot use."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"image must be an (H, W, 3) uint8 RGB array, got {getattr(rgb, 'shape', type(rgb))}")
        height, width = rgb.shape[:2]
        tm: dict[str, float] = {}
        t0 = time.perf_counter()
        p, new_plan = self._lookup(camera, width, height, settings.rectify, topic)
        out_hw = output_size(width, height, settings.output_scale)
        out_camera = p.camera.scaled(out_hw[1], out_hw[0])
        if p.maps is not None:
            t1 = time.perf_counter()
            rgb = rectify(rgb, *p.maps)
            tm["rectify_ms"] = (time.perf_counter() - t1) * 1e3
        maps = self.backend.infer(rgb, p.net)
        scale, state = 1.0, None
        anchor = self.anchor_for(settings.anchor)
        if anchor is not None:
            t1 = time.perf_counter()
            state = anchor.update(maps.depth_on_host(), p.camera.scaled(p.net.width, p.net.height), t, camera_height,
                                  camera_up)
            scale = state.scale
            tm["anchor_ms"] = (time.perf_counter() - t1) * 1e3
        validity = Validity(settings.min_depth, settings.max_depth, settings.min_confidence,
                            self._unseen_mask(p, out_hw))
        spec = None
        if settings.cloud is not None:
            c = settings.cloud
            rays, lengths = self._ray_table(out_camera, c.stride)
            out = alloc("cloud", (*rays.shape[:2], 4)) if alloc is not None else None
            spec = CloudSpec(rays, lengths, c.stride, c.min_range, c.max_range, c.min_confidence, c.rgb, out=out)
        res = self.backend.finish(maps, out_hw, validity, scale, spec)
        depth = res.depth
        if alloc is not None:
            depth = alloc("depth", out_hw)
            np.copyto(depth, res.depth)
        for key, val in (res.timings_ms or {}).items():
            tm[key if key.endswith("_ms") else f"{key}_ms"] = float(val)
        tm["total_ms"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(depth, res.confidence, out_camera, rgb, res.cloud, p, new_plan, state, tm)
