"""The one interface every inference backend implements."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from reflector_ros.core.depth import finalize_depth, finalize_outputs
from reflector_ros.core.pointcloud import CloudSpec, backproject, build_cloud
from reflector_ros.core.preprocess import resize_to
from reflector_ros.meta import ModelMeta


@dataclass
class DepthResult:
    depth: np.ndarray                 # (h, w) float32 metres along optical Z, NaN invalid
    confidence: np.ndarray            # (h, w) float32 in [0, 1]
    points: np.ndarray | None = None  # (h, w, 3) float32 xyz in the optical frame, if rays given
    cloud: np.ndarray | None = None   # (h', w', 4) float32 packed cloud (pack_cloud layout), if a CloudSpec given
    timings_ms: dict[str, float] | None = None  # preprocess / inference / postprocess


class Backend(Protocol):
    name: str          # "tensorrt", "torch-cuda", "torch-cpu", "onnxruntime-cpu", ...
    meta: ModelMeta
    builds_cloud: bool  # packs the cloud on its own device: the node then passes a CloudSpec

    def run(self, rgb: np.ndarray, scale: float, out_hw: tuple[int, int],
            rays: np.ndarray | None = None, cloud: CloudSpec | None = None) -> DepthResult:
        """rgb: (H, W, 3) uint8 RGB. scale: focal_scale() for this camera.

        Pre-processing (resize, normalise), the network, and post-processing (resize
        back to out_hw, canonical de-scaling, confidence, optional back-projection
        through ``rays`` of shape (out_h, out_w, 3), optional packed cloud per ``cloud``)
        all happen on the backend's device, with one device-to-host copy per output
        (the cloud's lands in ``cloud.out``).
        """
        ...


MAX_DIM = 16384  # refuse sizes no camera produces, before allocating anything


def check_run_args(rgb: np.ndarray, scale: float, out_hw: tuple[int, int],
                   rays: np.ndarray | None, cloud: CloudSpec | None = None) -> tuple[int, int]:
    """Shared input validation for every backend's run(); returns out_hw as ints.

    Raises InputError (the node skips the frame and keeps serving).
    """
    from reflector_ros.core.errors import InputError

    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        desc = f"{rgb.shape} {rgb.dtype}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(f"image must be an (H, W, 3) uint8 RGB array, got {desc}")
    if not (0 < rgb.shape[0] < MAX_DIM and 0 < rgb.shape[1] < MAX_DIM):
        raise InputError(f"image size {rgb.shape[1]}x{rgb.shape[0]} outside 1..{MAX_DIM - 1}")
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"focal scale must be finite and > 0, got {scale}")
    if len(out_hw) != 2:
        raise InputError(f"out_hw must be (height, width), got {out_hw}")
    h, w = int(out_hw[0]), int(out_hw[1])
    if not (0 < h < MAX_DIM and 0 < w < MAX_DIM):
        raise InputError(f"output size {w}x{h} outside 1..{MAX_DIM - 1}")
    if rays is not None and (not isinstance(rays, np.ndarray) or rays.shape != (h, w, 3)):
        got = rays.shape if isinstance(rays, np.ndarray) else type(rays).__name__
        raise InputError(f"rays must have shape ({h}, {w}, 3) to match out_hw, got {got}")
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


def host_postprocess(depth_net: np.ndarray, conf_net: np.ndarray, out_hw: tuple[int, int], rgb: np.ndarray,
                     rays: np.ndarray | None, cloud: CloudSpec | None, timings: dict[str, float]) -> DepthResult:
    """Network outputs on the host -> DepthResult: resize back, finalize, optional points
    and packed cloud. Shared by the backends whose outputs land on the host anyway (ONNX
    Runtime, TensorRT on pycuda); adds "postprocess" and "points" to ``timings``."""
    t0 = time.perf_counter()
    # the outputs are the caller's fresh arrays (or resized copies), so finalizing in place is safe
    depth = resize_to(np.asarray(depth_net, np.float32).reshape(depth_net.shape[-2:]), out_hw)
    conf = resize_to(np.asarray(conf_net, np.float32).reshape(conf_net.shape[-2:]), out_hw)
    finalize_outputs(depth, conf)
    t1 = time.perf_counter()
    points = backproject(depth, rays) if rays is not None else None
    packed = None
    if cloud is not None:
        final = finalize_depth(depth, conf, cloud.min_depth, cloud.max_depth, cloud.min_confidence)
        packed = build_cloud(final, conf, rgb, cloud)
    t2 = time.perf_counter()
    timings.update(postprocess=1e3 * (t1 - t0), points=1e3 * (t2 - t1))
    return DepthResult(depth=depth, confidence=conf, points=points, cloud=packed, timings_ms=timings)
