"""Device-side pre- and post-processing in torch, shared by the torch and TensorRT backends.

Every function is pure torch and device-agnostic, so the CPU test suite checks the
exact code the GPU runs against the numpy core. On CUDA a frame costs one
host-to-device copy (the uint8 image) and one device-to-host copy per output.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from reflector_ros.backends.base import DepthResult, check_run_args
from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import CloudSpec
from reflector_ros.meta import ModelMeta

# network forward: (image [1,3,H,W], focal_scale [1]) -> (depth [1,1,H,W], confidence [1,1,H,W])
InferFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def upload_rgb(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 to the device as uint8: 4x fewer bytes than float32 over the bus.

    On CUDA the copy goes through pinned memory (torch's caching host allocator
    makes the pinned buffer cheap) and is asynchronous on the current stream.
    """
    src = torch.from_numpy(np.ascontiguousarray(rgb))
    if device.type != "cuda":
        return src.to(device)
    staging = torch.empty(src.shape, dtype=torch.uint8, pin_memory=True)
    staging.copy_(src)
    return staging.to(device, non_blocking=True)


def normalisation(meta: ModelMeta, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, bias) such that x * scale + bias == (x / 255 - mean) / std."""
    mean = torch.tensor(meta.mean, dtype=torch.float32, device=device)
    std = torch.tensor(meta.std, dtype=torch.float32, device=device)
    return (1.0 / (255.0 * std)).view(1, 3, 1, 1), (-mean / std).view(1, 3, 1, 1)


def preprocess(img: torch.Tensor, in_hw: tuple[int, int], scale: torch.Tensor, bias: torch.Tensor,
               dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised (1, 3, h, w): plain resize (no crop), like core.preprocess.

    Bilinear with antialiasing when shrinking (as INTER_AREA averages), plain
    bilinear when growing; normalisation in float32, then the cast to dtype.
    """
    x = img.permute(2, 0, 1).unsqueeze(0)
    h, w = int(in_hw[0]), int(in_hw[1])
    if x.device.type != "cpu":  # CUDA's bilinear kernels want float
        x = x.float()
    if (x.shape[2], x.shape[3]) != (h, w):
        shrink = h < x.shape[2] or w < x.shape[3]
        # on the CPU torch resizes uint8 directly (about 40x faster than float at VGA,
        # and rounds to uint8 as cv2 does)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    x = x.float() * scale + bias
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def resize_map(m: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """A network-resolution map (any of [1,1,h,w], [1,h,w], [h,w]) to float32 (H, W).

    Plain bilinear, half-pixel centres, no antialiasing: the same sampling as
    cv2.INTER_LINEAR in core.preprocess.resize_to.
    """
    x = m.float().reshape(1, 1, m.shape[-2], m.shape[-1])
    if (x.shape[2], x.shape[3]) != tuple(out_hw):
        x = F.interpolate(x, size=(int(out_hw[0]), int(out_hw[1])), mode="bilinear",
                          align_corners=False, antialias=False)
    return x[0, 0]


def finalize(depth: torch.Tensor, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NaN for depth that is non-finite or <= 0 (REP 118: never 0.0); confidence in [0, 1]."""
    ok = torch.isfinite(depth) & (depth > 0)
    depth = torch.where(ok, depth, torch.full_like(depth, float("nan")))
    confidence = torch.nan_to_num(confidence, nan=0.0).clamp_(0.0, 1.0)
    return depth, confidence


def backproject(depth: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
    """(H, W) depth x (H, W, 3) rays ((u-cx)/fx, (v-cy)/fy, 1) -> (H, W, 3) xyz; NaN stays NaN."""
    return rays * depth.unsqueeze(-1)


def build_cloud(depth: torch.Tensor, confidence: torch.Tensor, img: torch.Tensor | None, spec: CloudSpec,
                rays: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Device twin of core.depth.finalize_depth + core.pointcloud.build_cloud.

    depth, confidence: (H, W) float32 after finalize(); img: (H0, W0, 3) uint8 colour;
    rays (h', w', 3) and lengths (h', w') on the device. Returns (h', w', 4) float32 with
    NaN xyz for every invalid point and, with spec.rgb, the 0x00RRGGBB bits in channel 3.
    The same float32 comparisons and single multiplies as the host, so the two agree bit
    for bit on the same depth (test_backends checks it).
    """
    s = spec.stride
    z = depth[::s, ::s]
    c = confidence[::s, ::s]
    lo = spec.min_depth if spec.min_depth > 0 else float(np.nextafter(np.float32(0), np.float32(1)))
    good = z >= lo                                    # NaN compares False
    if math.isfinite(spec.max_depth):
        good &= z <= spec.max_depth
    else:
        good &= z <= float(np.finfo(np.float32).max)  # +inf is invalid, as on the host
    if spec.min_confidence > 0:
        good &= c >= spec.min_confidence
    if spec.min_range > 0 or math.isfinite(spec.max_range):
        dist = lengths * z
        if spec.min_range > 0:
            good &= ~(dist < spec.min_range)
        if math.isfinite(spec.max_range):
            good &= ~(dist > spec.max_range)
    if spec.min_point_confidence > 0:
        good &= c >= spec.min_point_confidence
    z = torch.where(good, z, torch.full_like(z, float("nan")))
    bits = torch.zeros((*z.shape, 4), dtype=torch.int32, device=z.device)
    out = bits.view(torch.float32)                    # rgb goes in as integer bits, never as a float
    out[..., 0] = rays[..., 0] * z
    out[..., 1] = rays[..., 1] * z
    out[..., 2] = z
    if spec.rgb:
        if img is None:
            raise InputError("the cloud spec asks for rgb but no colour image was given")
        h, w = depth.shape
        col = img
        if tuple(col.shape[:2]) != (h, w):              # shrink like INTER_AREA: antialiased bilinear
            col = F.interpolate(col.permute(2, 0, 1).unsqueeze(0).float(), size=(h, w), mode="bilinear",
                                align_corners=False, antialias=True)[0].permute(1, 2, 0).round().clamp_(0, 255)
        col = col[::s, ::s].to(torch.int32)
        bits[..., 3] = (col[..., 0] << 16) | (col[..., 1] << 8) | col[..., 2]
    return out


def download(tensors: list[torch.Tensor], into: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
    """One device-to-host copy per tensor; on CUDA all copies are queued, then one sync.

    ``into`` maps a tensor's index to a host array (e.g. a message_array) that receives
    its copy directly, instead of a staging buffer.
    """
    into = into or {}
    if not tensors or tensors[0].device.type != "cuda":
        outs = []
        for i, t in enumerate(tensors):
            if i in into:
                torch.from_numpy(into[i]).copy_(t.detach())
                outs.append(into[i])
            else:
                outs.append(t.detach().contiguous().numpy())
        return outs
    hosts = [torch.from_numpy(into[i]) if i in into else torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
             for i, t in enumerate(tensors)]
    for i, (host, t) in enumerate(zip(hosts, tensors)):
        host.copy_(t, non_blocking=i not in into)   # pageable destinations copy synchronously
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [into[i] if i in into else h.numpy() for i, h in enumerate(hosts)]


class DevicePipeline:
    """Frame pipeline around a network forward: upload, preprocess, infer, postprocess,
    back-project, download. Holds the per-device state (normalisation, ray table)."""

    def __init__(self, meta: ModelMeta, device: torch.device, input_dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        self.meta = meta
        self.device = device
        self.input_dtype = input_dtype
        self.channels_last = channels_last
        self.norm_scale, self.norm_bias = normalisation(meta, device)
        self._rays_src: np.ndarray | None = None
        self._rays_dev: torch.Tensor | None = None
        self._cloud_src: tuple[np.ndarray, np.ndarray] | None = None
        self._cloud_dev: tuple[torch.Tensor, torch.Tensor] | None = None
        # a stream of our own: TensorRT's enqueue on the legacy default stream adds syncs
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def rays_on_device(self, rays: np.ndarray) -> torch.Tensor:
        """Upload the ray table once and reuse it while the caller passes the same array
        (the node keeps one per camera intrinsics and stride)."""
        if self._rays_src is not rays or self._rays_dev is None:
            self._rays_dev = torch.from_numpy(np.ascontiguousarray(rays, dtype=np.float32)).to(self.device)
            self._rays_src = rays
        return self._rays_dev

    def cloud_tables_on_device(self, spec: CloudSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The spec's rays and lengths, uploaded once per ray table (as rays_on_device)."""
        src = self._cloud_src
        if src is None or src[0] is not spec.rays or src[1] is not spec.lengths or self._cloud_dev is None:
            self._cloud_dev = (torch.from_numpy(np.ascontiguousarray(spec.rays, dtype=np.float32)).to(self.device),
                               torch.from_numpy(np.ascontiguousarray(spec.lengths, dtype=np.float32)).to(self.device))
            self._cloud_src = (spec.rays, spec.lengths)
        return self._cloud_dev

    def run(self, infer: InferFn, rgb: np.ndarray, scale: float, out_hw: tuple[int, int],
            rays: np.ndarray | None = None, cloud: CloudSpec | None = None) -> DepthResult:
        out_hw = check_run_args(rgb, scale, out_hw, rays, cloud)
        cuda = self.device.type == "cuda"
        marks: list[object] = []

        def mark() -> None:
            if cuda:
                ev = torch.cuda.Event(enable_timing=True)
                ev.record()
                marks.append(ev)
            else:
                marks.append(time.perf_counter())

        on_stream = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with torch.inference_mode(), on_stream:
            mark()
            img = upload_rgb(rgb, self.device)
            x = preprocess(img, (self.meta.input_height, self.meta.input_width), self.norm_scale,
                           self.norm_bias, self.input_dtype, self.channels_last)
            s = torch.full((1,), float(scale), dtype=self.input_dtype, device=self.device)
            mark()
            depth_net, conf_net = infer(x, s)
            mark()
            depth, conf = finalize(resize_map(depth_net, out_hw), resize_map(conf_net, out_hw))
            mark()
            outs = [depth, conf]
            into: dict[int, np.ndarray] = {}
            if rays is not None:
                outs.append(backproject(depth, self.rays_on_device(rays)))
            if cloud is not None:
                if cloud.out is not None:
                    into[len(outs)] = cloud.out
                outs.append(build_cloud(depth, conf, img, cloud, *self.cloud_tables_on_device(cloud)))
            mark()
            host = download(outs, into)
            mark()
        if cuda:  # download() synchronised the stream, so every event is complete
            ms = [marks[i].elapsed_time(marks[i + 1]) for i in range(len(marks) - 1)]  # type: ignore[attr-defined]
        else:
            ms = [1000.0 * (marks[i + 1] - marks[i]) for i in range(len(marks) - 1)]  # type: ignore[operator]
        # the device-to-host copies count as post-processing (they are on every frame)
        timings = {"preprocess": ms[0], "inference": ms[1], "postprocess": ms[2] + ms[4], "points": ms[3]}
        return DepthResult(depth=host[0], confidence=host[1], points=host[2] if rays is not None else None,
                           cloud=host[-1] if cloud is not None else None, timings_ms=timings)
