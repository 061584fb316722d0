"""The one interface every inference backend implements, and its shared host half.

A frame goes through a backend in two calls, so that a caller can look at the network's
depth between them (the floor scale anchor fits a plane to it):

1. ``infer(rgb, net) -> NetMaps``: resize to ``net``'s size, normalise, run the network.
   The maps stay where the backend computed them (host arrays, or device tensors).
2. ``finish(maps, out_hw, validity, scale, cloud) -> DepthResult``: resize back to the
   output size, multiply by ``scale``, apply the validity rules, and pack the cloud,
   on the backend's device, with one device-to-host copy per output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from reflector_ros.core.depth import Validity, finalize_depth, finalize_outputs
from reflector_ros.core.errors import InputError
from reflector_ros.core.limits import MAX_SIDE, check_size
from reflector_ros.core.pointcloud import CloudSpec, build_cloud
from reflector_ros.core.preprocess import resize_to
from reflector_ros.meta import ModelMeta, NetInput


@dataclass
class NetMaps:
    """The network's outputs for one frame at the network resolution (h, w).

    depth: metric depth in metres (canonical depth x focal_scale); confidence in [0, 1].
    Host numpy arrays for host backends, device tensors for torch/TensorRT; ``image`` is
    the frame as the backend holds it (host RGB, or the uploaded tensor) for the cloud's
    colours.
    """
    depth: Any
    confidence: Any
    image: Any
    timings_ms: dict[str, float] = field(default_factory=dict)
    marks: tuple[Any, ...] | None = None   # device backends: clock marks of infer(), read in finish()

    def depth_on_host(self) -> np.ndarray:
        """(h, w) float32 network-resolution depth on the host (one small copy for a device)."""
        d = self.depth
        if isinstance(d, np.ndarray):
            return d.reshape(d.shape[-2:]).astype(np.float32, copy=False)
        return d.detach().float().reshape(d.shape[-2], d.shape[-1]).cpu().numpy()


@dataclass
class DepthResult:
    depth: np.ndarray                 # (h, w) float32 metres along optical Z, NaN invalid (validity applied)
    confidence: np.ndarray            # (h, w) float32 in [0, 1], 0 where the lens saw nothing
    cloud: np.ndarray | None = None   # (h', w', 4) float32 packed cloud (pack_cloud layout), if a CloudSpec given
    timings_ms: dict[str, float] | None = None  # preprocess / inference / postprocess / points


class Backend(Protocol):
    name: str          # "tensorrt", "torch-cuda", "torch-cpu", "onnxruntime-cpu", ...
    meta: ModelMeta
    builds_cloud: bool  # True: finish() packs the cloud on the backend's device (reported in diagnostics)

    def infer(self, rgb: np.ndarray, net: NetInput) -> NetMaps:
        """rgb: (H, W, 3) uint8 RGB of the camera ``net`` was planned for (meta.network_input)."""
        ...

    def finish(self, maps: NetMaps, out_hw: tuple[int, int], validity: Validity, scale: float = 1.0,
               cloud: CloudSpec | None = None) -> DepthResult:
        """Network maps -> output-size depth x scale with ``validity`` applied, and the cloud."""
        ...


def run(backend: Backend, rgb: np.ndarray, net: NetInput, out_hw: tuple[int, int],
        validity: Validity | None = None, cloud: CloudSpec | None = None) -> DepthResult:
    """infer + finish in one call (warm-up, benchmarks, tests)."""
    return backend.finish(backend.infer(rgb, net), out_hw, validity or Validity(), 1.0, cloud)


def check_frame(rgb: np.ndarray, net: NetInput) -> None:
    """Shared input validation of infer(); InputError (the caller skips the frame)."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"{rgb.shape} {rgb.dtype}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(f"image must be an (H, W, 3) uint8 RGB array, got {desc}")
    check_size(rgb.shape[1], rgb.shape[0], "image")
    check_size(net.width, net.height, "network input")
    if not (np.isfinite(net.focal_scale) and net.focal_scale > 0):
        raise InputError(f"focal scale must be finite and > 0, got {net.focal_scale}")


def check_finish(out_hw: tuple[int, int], validity: Validity, scale: float,
                 cloud: CloudSpec | None) -> tuple[int, int]:
    """Shared validation of finish()'s arguments; returns out_hw as ints."""
    if len(out_hw) != 2:
        raise InputError(f"out_hw must be (height, width), got {out_hw}")
    w, h = check_size(out_hw[1], out_hw[0], "output")
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"depth scale must be finite and > 0, got {scale}")
    if validity.unseen is not None and validity.unseen.shape != (h, w):
        raise InputError(f"unseen mask {validity.unseen.shape} does not match the output {(h, w)}")
    if cloud is not None:
        s = cloud.stride
        if not isinstance(s, int) or s < 1:
            raise InputError(f"cloud stride must be a positive integer, got {s!r}")
        hw = (-(-h // s), -(-w // s))
        if cloud.rays.shape != (*hw, 3) or cloud.lengths.shape != hw:
            raise InputError(f"cloud rays {cloud.rays.shape} / lengths {cloud.lengths.shape} do not match "
                             f"the output {w}x{h} at stride {s} (expected {(*hw, 3)})")
        if cloud.out is not None and (cloud.out.shape != (*hw, 4) or cloud.out.dtype != np.float32
                                      or not cloud.out.flags.c_contiguous):
            raise InputError(f"cloud.out must be a contiguous {(*hw, 4)} float32 array, got "
                             f"{cloud.out.shape} {cloud.out.dtype}")
    return h, w


def host_finish(maps: NetMaps, out_hw: tuple[int, int], validity: Validity, scale: float = 1.0,
                cloud: CloudSpec | None = None) -> DepthResult:
    """finish() for backends whose maps are on the host (ONNX Runtime, TensorRT on pycuda):
    resize back, scale, finalize, validity, then the packed cloud. torch_ops.DevicePipeline
    .finish is its device twin."""
    out_hw = check_finish(out_hw, validity, scale, cloud)
    timings = dict(maps.timings_ms)
    t0 = time.perf_counter()
    # the outputs are fresh arrays (or resized copies), so finalizing in place is safe
    depth_net = np.asarray(maps.depth, np.float32)
    depth = resize_to(depth_net.reshape(depth_net.shape[-2:]), out_hw)
    conf_net = np.asarray(maps.confidence, np.float32)
    conf = resize_to(conf_net.reshape(conf_net.shape[-2:]), out_hw)
    if depth is depth_net.reshape(depth_net.shape[-2:]):
        depth = depth.copy()
    if scale != 1.0:
        depth *= np.float32(scale)
    finalize_outputs(depth, conf, validity.unseen)
    finalize_depth(depth, conf, validity, out=depth)
    t1 = time.perf_counter()
    packed = build_cloud(depth, conf, maps.image, cloud) if cloud is not None else None
    t2 = time.perf_counter()
    timings.update(postprocess=1e3 * (t1 - t0), points=1e3 * (t2 - t1))
    return DepthResult(depth=depth, confidence=conf, cloud=packed, timings_ms=timings)


__all__ = ["Backend", "NetMaps", "DepthResult", "run", "check_frame", "check_finish", "host_finish", "MAX_SIDE"]
