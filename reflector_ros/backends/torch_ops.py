"""Device-side pre- and post-processing in torch, shared by the torch and TensorRT backends.

Every function is pure torch and device-agnostic, so the CPU test suite checks the
exact code the GPU runs against the numpy core. On CUDA a frame costs one
host-to-device copy (the uint8 image) and one device-to-host copy per output.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from reflector_ros.backends.base import DepthResult, check_run_args
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


def download(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """One device-to-host copy per tensor; on CUDA all copies are queued, then one sync."""
    if not tensors or tensors[0].device.type != "cuda":
        return [t.detach().contiguous().numpy() for t in tensors]
    hosts = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for host, t in zip(hosts, tensors):
        host.copy_(t, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [h.numpy() for h in hosts]


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
        # a stream of our own: TensorRT's enqueue on the legacy default stream adds syncs
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def rays_on_device(self, rays: np.ndarray) -> torch.Tensor:
        """Upload the ray table once and reuse it while the caller passes the same array
        (the node keeps one per camera intrinsics and stride)."""
        if self._rays_src is not rays or self._rays_dev is None:
            self._rays_dev = torch.from_numpy(np.ascontiguousarray(rays, dtype=np.float32)).to(self.device)
            self._rays_src = rays
        return self._rays_dev

    def run(self, infer: InferFn, rgb: np.ndarray, scale: float, out_hw: tuple[int, int],
            rays: np.ndarray | None = None) -> DepthResult:
        out_hw = check_run_args(rgb, scale, out_hw, rays)
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
            if rays is not None:
                outs.append(backproject(depth, self.rays_on_device(rays)))
            mark()
            host = download(outs)
            mark()
        if cuda:  # download() synchronised the stream, so every event is complete
            ms = [marks[i].elapsed_time(marks[i + 1]) for i in range(len(marks) - 1)]  # type: ignore[attr-defined]
        else:
            ms = [1000.0 * (marks[i + 1] - marks[i]) for i in range(len(marks) - 1)]  # type: ignore[operator]
        # the device-to-host copies count as post-processing (they are on every frame)
        timings = {"preprocess": ms[0], "inference": ms[1], "postprocess": ms[2] + ms[4], "points": ms[3]}
        return DepthResult(depth=host[0], confidence=host[1], points=host[2] if rays is not None else None,
                           timings_ms=timings)
