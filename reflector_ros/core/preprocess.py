"""Network input from an RGB frame, and network maps back to the output size (numpy path).

The contract (docs/ARCHITECTURE.md): plain resize of the whole image to the size
``meta.network_input`` gives (fixed, or following the camera for canonical-camera
models), no crop or letterbox, then (x/255 - mean)/std per channel, NCHW float32.
"""
from __future__ import annotations

import cv2
import numpy as np

from reflector_ros.core.errors import InputError
from reflector_ros.meta import ModelMeta, NetInput


def _interp(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """INTER_AREA only when some side shrinks by more than 2x.

    Up to 2x, bilinear already averages every source pixel (at exactly 2x it samples the
    midpoint of each 2x2 block, which is the box filter INTER_AREA computes), at a seventh
    of INTER_AREA's cost for VGA -> 256x320. Beyond 2x bilinear would skip pixels and alias.
    """
    factor = max(src_hw[0] / dst_hw[0], src_hw[1] / dst_hw[1])
    return cv2.INTER_AREA if factor > 2.0 else cv2.INTER_LINEAR


def shrink(rgb: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 resized to ``size_wh`` without aliasing, fast.

    An integer factor goes straight to INTER_AREA (OpenCV's box path). A fractional one beyond
    2x is halved with INTER_AREA first (the 2x2 box path, a seventh of the cost of INTER_AREA
    at a fractional factor such as VGA -> 233x311 for a canonical-camera model),
    then bilinear for the remaining factor below 2x (see ``_interp``). On real frames the result
    is within a mean of 1 grey level of one INTER_AREA resize.
    """
    w, h = size_wh
    sh, sw = rgb.shape[:2]
    if sh % h == 0 and sw % w == 0 and sh // h == sw // w:      # integer factor: OpenCV's fast box path
        return cv2.resize(rgb, (w, h), interpolation=_interp((sh, sw), (h, w)))
    while rgb.shape[0] > 2 * h and rgb.shape[1] > 2 * w:
        rgb = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if rgb.shape[:2] == (h, w):
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=_interp(rgb.shape[:2], (h, w)))


def preprocess(rgb: np.ndarray, meta: ModelMeta, net: NetInput, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, net.height, net.width) float32 normalised network input.

    ``out`` lets the caller reuse one input buffer across frames.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {shape} {getattr(rgb, 'dtype', type(rgb))}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f"empty image {rgb.shape}")
    h, w = net.height, net.width
    if out is None:
        out = np.empty((1, 3, h, w), np.float32)
    elif out.shape != (1, 3, h, w) or out.dtype != np.float32:
        raise InputError(f"out must be (1, 3, {h}, {w}) float32, got {out.shape} {out.dtype}")
    small = rgb if rgb.shape[:2] == (h, w) else shrink(rgb, (w, h))
    for c in range(3):
        scale = 1.0 / (255.0 * meta.std[c])
        bias = -meta.mean[c] / meta.std[c]
        # one fused multiply-add per channel, written straight into the CHW plane
        np.multiply(small[:, :, c], np.float32(scale), out=out[0, c], dtype=np.float32)
        out[0, c] += np.float32(bias)
    return out


def resize_to(arr2d: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a network-resolution map (depth, confidence) to (h, w) float32."""
    if arr2d.ndim != 2:
        raise InputError(f"expected a 2-D map, got shape {arr2d.shape}")
    h, w = int(out_hw[0]), int(out_hw[1])
    if h <= 0 or w <= 0:
        raise InputError(f"output size {out_hw} is empty")
    src = arr2d if arr2d.dtype == np.float32 else arr2d.astype(np.float32)
    if src.shape == (h, w):
        return src
    return cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)
