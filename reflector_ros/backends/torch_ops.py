"""Device-side pre- and post-processing in torch, shared by the torch and TensorRT backends.

Every function is pure torch and device-agnostic, so the CPU test suite checks the
exact code the GPU runs against the numpy core. On CUDA a frame costs one
host-to-device copy (the uint8 image) and one device-to-host copy per output.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from reflector_ros.backends.base import DepthResult, NetMaps, check_finish, check_frame
from reflector_ros.core.depth import Validity
from reflector_ros.core.errors import InputError
from reflector_ros.core.pointcloud import CloudSpec
from reflector_ros.meta import ModelMeta, NetInput

# network forward: (image [1,3,H,W], focal_scale [1]) -> (depth [1,1,H,W], confidence [1,1,H,W])
InferFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def upload_rgb(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 to the device as uint8: 4x fewer bytes than float32 over the bus.

    On CUDA the copy goes through pinned memory (torch's caching host allocator
    makes the pinned buffer cheap) and is asynchronous on the current stream.
    """
    if device.type != "cuda":
        # a message's or a bag's buffer is read-only: torch would warn, so copy it then
        return torch.from_numpy(np.ascontiguousarray(rgb) if rgb.flags.writeable else rgb.copy()).to(device)
    staging = torch.empty(rgb.shape, dtype=torch.uint8, pin_memory=True)
    staging.numpy()[...] = rgb          # numpy copies into the pinned buffer; read-only sources are fine
    return staging.to(device, non_blocking=True)


def normalisation(meta: ModelMeta, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, bias) such that x * scale + bias == (x / 255 - mean) / std."""
    mean = torch.tensor(meta.mean, dtype=torch.float32, device=device)
    std = torch.tensor(meta.std, dtype=torch.float32, device=device)
    return (1.0 / (255.0 * std)).view(1, 3, 1, 1), (-mean / std).view(1, 3, 1, 1)


def shrink(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """(1, C, H, W) image resized to out_hw by core.preprocess.shrink's rule, so every backend
    feeds the network the same pixels: an integer factor above 2x is a box average (INTER_AREA);
    a fractional one is halved by INTER_AREA while it stays above 2x; the rest (up to 2x, or
    growing) is plain bilinear with half-pixel centres (INTER_LINEAR), or INTER_AREA when a
    side still shrinks beyond 2x (the aspect changes). uint8 in, uint8 out on the CPU (rounded
    as cv2 rounds); float in, float out on CUDA, rounded to whole levels too.
    """
    h, w = int(out_hw[0]), int(out_hw[1])
    sh, sw = x.shape[2], x.shape[3]
    integer = sh % h == 0 and sw % w == 0 and sh // h == sw // w
    if integer and sh // h > 2:
        return _round_like(F.avg_pool2d(x.float(), sh // h), x.dtype)
    while not integer and x.shape[2] > 2 * h and x.shape[3] > 2 * w:
        x = _round_like(area(x, (x.shape[2] // 2, x.shape[3] // 2)), x.dtype)
    if (x.shape[2], x.shape[3]) == (h, w):
        return x
    if max(x.shape[2] / h, x.shape[3] / w) > 2.0:     # one side still shrinks > 2x (the aspect changes)
        return _round_like(area(x, (h, w)), x.dtype)
    src = x.float() if min(h, w) == 1 else x     # torch's uint8 bilinear kernel asserts on a 1-pixel side
    return _round_like(F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False, antialias=False),
                       x.dtype)


def area(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """(1, C, H, W) -> float (1, C, h, w) by cv2's INTER_AREA for shrinking: each output pixel
    is the mean of the input area it covers, input pixels weighted by their overlap (so a
    fractional factor such as 641 -> 320 is not the equal-weight bins of adaptive pooling).
    Separable and banded: an output pixel reads about ceil(H / h) + 1 inputs per axis.
    Exact 2x halving is avg_pool2d. (An axis that grows gets the overlap average of its two
    nearest inputs; cv2 switches to bilinear there.)"""
    h, w = int(out_hw[0]), int(out_hw[1])
    sh, sw = x.shape[2], x.shape[3]
    y = x.float()
    if sh == 2 * h and sw == 2 * w:
        return F.avg_pool2d(y, 2)

    def rows(t: torch.Tensor) -> torch.Tensor:
        if t.shape[2] == h:
            return t
        idx, wts = _band(t.shape[2], h, t.device)
        return (t[:, :, idx, :] * wts[None, None, :, :, None]).sum(dim=3)   # (1, C, h, k, W) -> (1, C, h, W)

    def cols(t: torch.Tensor) -> torch.Tensor:
        if t.shape[3] == w:
            return t
        idx, wts = _band(t.shape[3], w, t.device)
        return (t[:, :, :, idx] * wts[None, None, None]).sum(dim=4)         # (1, C, H, w, k) -> (1, C, H, w)

    # the axis that shrinks more first, so the other one works on less
    return rows(cols(y)) if sw / w > sh / h else cols(rows(y))


_BANDS: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _band(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_out, k) input indices and weights: output i covers input [i s, (i + 1) s) with
    s = n_in / n_out; weight = its overlap with input pixel j, divided by the covered length
    (rows sum to 1). Cached per size and device (a camera's frames all share one)."""
    key = (n_in, n_out, str(device))
    if key not in _BANDS:
        s = n_in / n_out
        k = int(math.ceil(s)) + 1
        lo = torch.arange(n_out, dtype=torch.float64) * s
        first = torch.floor(lo).long()
        idx = first[:, None] + torch.arange(k)[None, :]                     # (n_out, k)
        j = idx.double()
        overlap = (torch.minimum(lo[:, None] + s, j + 1) - torch.maximum(lo[:, None], j)).clamp_(min=0.0)
        overlap[idx >= n_in] = 0.0
        weights = overlap / overlap.sum(dim=1, keepdim=True)
        if len(_BANDS) > 64:
            _BANDS.clear()
        _BANDS[key] = (idx.clamp_(max=n_in - 1).to(device), weights.to(device=device, dtype=torch.float32))
    return _BANDS[key]


def _round_like(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Back to whole grey levels, halves rounded up as cv2's fixed-point resizes do."""
    if dtype == torch.uint8:
        return y if y.dtype == torch.uint8 else y.add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)
    return y.add_(0.5).floor_() if y.is_floating_point() else y.to(dtype)


def preprocess(img: torch.Tensor, in_hw: tuple[int, int], scale: torch.Tensor, bias: torch.Tensor,
               dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised (1, 3, h, w): plain resize (no crop) by ``shrink``, the
    rule of core.preprocess; normalisation in float32, then the cast to dtype.
    """
    x = img.permute(2, 0, 1).unsqueeze(0)
    h, w = int(in_hw[0]), int(in_hw[1])
    if x.device.type != "cpu":  # CUDA's bilinear kernels want float
        x = x.float()
    if (x.shape[2], x.shape[3]) != (h, w):
        # on the CPU torch resizes uint8 directly (about 40x faster than float at VGA,
        # and rounds to uint8 as cv2 does)
        x = shrink(x.contiguous(), (h, w))
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


def finish_depth(depth: torch.Tensor, confidence: torch.Tensor, validity: Validity,
                 unseen: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Device twin of core.depth.finalize_outputs + finalize_depth: NaN where depth is
    non-finite, <= 0, outside [min_depth, max_depth], below min_confidence or unseen;
    confidence in [0, 1] (NaN and unseen as 0). ``unseen`` is validity.unseen on the device.
    The same float32 comparisons as the host, so both agree bit for bit."""
    confidence = torch.nan_to_num(confidence, nan=0.0).clamp_(0.0, 1.0)
    lo = validity.min_depth if validity.min_depth > 0 else float(np.nextafter(np.float32(0), np.float32(1)))
    hi = validity.max_depth if math.isfinite(validity.max_depth) else float(np.finfo(np.float32).max)
    good = (depth >= lo) & (depth <= hi)              # NaN compares False, +inf fails the second
    if validity.min_confidence > 0:
        good &= confidence >= validity.min_confidence
    if unseen is not None:
        good &= ~unseen
        confidence = confidence.masked_fill(unseen, 0.0)
    depth = torch.where(good, depth, torch.full_like(depth, float("nan")))
    return depth, confidence


def build_cloud(depth: torch.Tensor, confidence: torch.Tensor, img: torch.Tensor | None, spec: CloudSpec,
                rays: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Device twin of core.pointcloud.build_cloud.

    depth, confidence: (H, W) float32 after finish_depth(); img: (H0, W0, 3) uint8 colour;
    rays (h', w', 3) and lengths (h', w') on the device. Returns (h', w', 4) float32 with
    NaN xyz for every invalid point and, with spec.rgb, the 0x00RRGGBB bits in channel 3.
    The same float32 comparisons and single multiplies as the host, so the two agree bit
    for bit on the same depth (test_backends checks it).
    """
    s = spec.stride
    z = depth[::s, ::s]
    c = confidence[::s, ::s]
    good = torch.ones_like(z, dtype=torch.bool)
    if spec.min_range > 0 or math.isfinite(spec.max_range):
        dist = lengths * z
        if spec.min_range > 0:
            good &= ~(dist < spec.min_range)
        if math.isfinite(spec.max_range):
            good &= ~(dist > spec.max_range)
    if spec.min_point_confidence > 0:
        good &= c >= spec.min_point_confidence   # NaN is low too
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
        if tuple(col.shape[:2]) != (h, w):              # the same resize as the network input's
            col = shrink(col.permute(2, 0, 1).unsqueeze(0).float(), (h, w))[0].permute(1, 2, 0)
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
    """A backend's frame work around its network forward: upload, preprocess, infer;
    then resize back, scale, validity, cloud, download. Holds the per-device state
    (normalisation, the uploaded ray table and unseen mask)."""

    def __init__(self, meta: ModelMeta, device: torch.device, input_dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        self.meta = meta
        self.device = device
        self.input_dtype = input_dtype
        self.channels_last = channels_last
        self.norm_scale, self.norm_bias = normalisation(meta, device)
        self._uploads: dict[str, tuple[np.ndarray, torch.Tensor]] = {}
        # a stream of our own: TensorRT's enqueue on the legacy default stream adds syncs
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def on_device(self, name: str, array: np.ndarray) -> torch.Tensor:
        """Upload a host table once and reuse it while the caller passes the same array (the
        pipeline keeps one ray table per camera and stride, one unseen mask per calibration).
        The cache holds the array itself, so it cannot be freed and its id reused by another."""
        hit = self._uploads.get(name)
        if hit is None or hit[0] is not array:
            hit = self._uploads[name] = (array, torch.from_numpy(np.ascontiguousarray(array)).to(self.device))
        return hit[1]

    def _clock(self) -> Callable[[], object]:
        cuda = self.device.type == "cuda"

        def mark() -> object:
            if cuda:
                ev = torch.cuda.Event(enable_timing=True)
                ev.record()
                return ev
            return time.perf_counter()
        return mark

    def _elapsed(self, a: object, b: object) -> float:
        if self.device.type == "cuda":
            return float(a.elapsed_time(b))  # type: ignore[attr-defined]
        return 1000.0 * (b - a)  # type: ignore[operator]

    def _on_stream(self) -> Any:
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def infer(self, forward: InferFn, rgb: np.ndarray, net: NetInput) -> NetMaps:
        check_frame(rgb, net)
        mark = self._clock()
        with torch.inference_mode(), self._on_stream():
            m0 = mark()
            img = upload_rgb(rgb, self.device)
            x = preprocess(img, (net.height, net.width), self.norm_scale, self.norm_bias, self.input_dtype,
                           self.channels_last)
            s = torch.full((1,), float(net.focal_scale), dtype=self.input_dtype, device=self.device)
            m1 = mark()
            # may be static buffers (CUDA graph, TensorRT): valid until the next infer()
            depth_net, conf_net = forward(x, s)
            m2 = mark()
        return NetMaps(depth_net, conf_net, img, marks=(m0, m1, m2))

    def finish(self, maps: NetMaps, out_hw: tuple[int, int], validity: Validity, scale: float = 1.0,
               cloud: CloudSpec | None = None) -> DepthResult:
        out_hw = check_finish(out_hw, validity, scale, cloud)
        mark = self._clock()
        with torch.inference_mode(), self._on_stream():
            m3 = mark()
            depth = resize_map(maps.depth, out_hw)
            if scale != 1.0:
                depth = depth * float(scale)
            unseen = self.on_device("unseen", validity.unseen) if validity.unseen is not None else None
            depth, conf = finish_depth(depth, resize_map(maps.confidence, out_hw), validity, unseen)
            m4 = mark()
            outs = [depth, conf]
            into: dict[int, np.ndarray] = {}
            if cloud is not None:
                if cloud.out is not None:
                    into[len(outs)] = cloud.out
                rays = self.on_device("rays", cloud.rays)
                lengths = self.on_device("lengths", cloud.lengths)
                outs.append(build_cloud(depth, conf, maps.image, cloud, rays, lengths))
            m5 = mark()
            host = download(outs, into)
            m6 = mark()
        m0, m1, m2 = maps.marks if maps.marks is not None else (m3, m3, m3)
        # download() synchronised the stream, so every CUDA event is complete
        timings = {"preprocess": self._elapsed(m0, m1), "inference": self._elapsed(m1, m2),
                   "postprocess": self._elapsed(m3, m4) + self._elapsed(m5, m6), "points": self._elapsed(m4, m5)}
        return DepthResult(depth=host[0], confidence=host[1], cloud=host[2] if cloud is not None else None,
                           timings_ms=timings)


class OnDeviceBackend:
    """``infer`` and ``finish`` of a backend whose frame work runs in torch on its device
    (``DevicePipeline``) around its own ``forward(x, focal_scale) -> (depth, confidence)``:
    the torch and TensorRT backends."""

    pipeline: DevicePipeline

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def infer(self, rgb: np.ndarray, net: NetInput) -> NetMaps:
        return self.pipeline.infer(self.forward, rgb, net)

    def finish(self, maps: NetMaps, out_hw: tuple[int, int], validity: Validity, scale: float = 1.0,
               cloud: CloudSpec | None = None) -> DepthResult:
        return self.pipeline.finish(maps, out_hw, validity, scale, cloud)
