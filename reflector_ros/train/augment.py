"""Training views that keep the geometry exact: resize, zoom, crop, mirror, colour.

Every step carries the intrinsics with the pixels, so a view's fx, fy, cx, cy are right
for its own pixels and ``focal_scale = f / f_c`` stays the right canonical scale
(test/test_augment.py checks that 3-D points land on their depth after any view).
Supervised crops come from :class:`CropSet`; the self-supervised stage takes a target
crop and its source frames from :func:`sequence_view`, which applies one geometric
augmentation to all of them and mirrors the relative poses with the images.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from reflector_ros.core.camera import Intrinsics, k_matrix
from reflector_ros.data.poses import MIRROR_X
from reflector_ros.data.sample import Sample
from reflector_ros.train.config import AugmentConfig


def _resized(sample: Sample, W: int, H: int, shrink: bool) -> Sample:
    """The frame resized to W x H, intrinsics with it (Intrinsics.scaled, the one resize rule);
    colour by area averaging when ``shrink``, else bilinear; depth by nearest neighbour."""
    rgb = cv2.resize(sample.image, (W, H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    depth = cv2.resize(sample.depth, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)  # centre-aligned, like the intrinsics
    return Sample(rgb, depth, sample.camera.scaled(W, H), sample.name, sample.group)


def to_network_scale(sample: Sample, meta: Any) -> Sample:
    """Resize of the whole frame to the network input exactly as inference does
    (``meta.network_input``: the fixed size, or f_c / f in canonical mode), intrinsics with it.

    After this a crop keeps fx in network pixels, which is what focal_scale needs.
    """
    from reflector_ros.meta import network_input

    h, w = sample.depth.shape
    net = network_input(sample.camera, meta)
    H, W = net.height, net.width
    if (h, w) == (H, W):
        return sample
    return _resized(sample, W, H, shrink=W < w)


def draw_zoom(rng: np.random.Generator, scale_range: tuple[float, float]) -> float:
    """A zoom factor log-uniform in scale_range; 1.0 (and no draw) for an empty range."""
    lo, hi = scale_range
    if hi <= lo:
        return 1.0
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def rescale(sample: Sample, r: float) -> Sample:
    """Zoom by r (sides rounded to whole pixels) with fx, fy multiplied by the real ratio."""
    if r == 1.0:
        return sample
    h, w = sample.depth.shape
    return _resized(sample, max(1, round(w * r)), max(1, round(h * r)), shrink=r < 1)


def random_rescale(sample: Sample, rng: np.random.Generator, scale_range: tuple[float, float]) -> Sample:
    """Zoom by r (log-uniform in scale_range) with fx, fy multiplied by r (Metric3D).

    The canonical target depth / focal_scale shrinks with the zoom, so the network
    must read the magnification from focal_scale, not guess it from the image.
    """
    return rescale(sample, draw_zoom(rng, scale_range))


def color_jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness x0.75-1.25, per-channel gain x0.9-1.1, offset +-15, contrast x0.8-1.2 (uint8)."""
    f = img.astype(np.float32) * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    f += rng.uniform(-15, 15)
    mu = f.mean()
    f = (f - mu) * rng.uniform(0.8, 1.2) + mu
    return np.clip(f, 0, 255).astype(np.uint8)


def random_view(sample: Sample, rng: np.random.Generator, crop_hw: tuple[int, int], flip: bool = True,
                color: bool = True) -> Sample:
    """Random crop (focal unchanged, principal point shifted), mirror, and colour jitter.

    Geometry stays exact: a crop never rescales, so depth / focal_scale is still the
    right canonical target; a mirror only moves cx. A frame zoomed out below the crop
    size is padded at a random offset (mean colour, depth 0 = invalid, which every loss
    ignores), so every crop of a batch has the same size.
    """
    h, w = sample.depth.shape
    ch, cw = crop_hw
    if h < ch or w < cw:
        py, px = max(0, ch - h), max(0, cw - w)
        top, left = int(rng.integers(0, py + 1)), int(rng.integers(0, px + 1))
        pads = ((top, py - top), (left, px - left))
        fill = sample.image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        image = np.empty((h + py, w + px, 3), np.uint8)
        image[:] = fill
        image[top:top + h, left:left + w] = sample.image
        sample = Sample(image, np.pad(sample.depth, pads), sample.camera.cropped(-left, -top, w + px, h + py),
                        sample.name, sample.group)
        h, w = sample.depth.shape
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = sample.image[y0:y0 + ch, x0:x0 + cw]
    depth = sample.depth[y0:y0 + ch, x0:x0 + cw]
    camera = sample.camera.cropped(x0, y0, cw, ch)
    if flip and rng.random() < 0.5:
        img, depth, camera = img[:, ::-1], depth[:, ::-1], camera.mirrored()
    if color:
        img = color_jitter(img, rng)
    return Sample(np.ascontiguousarray(img), np.ascontiguousarray(depth), camera, sample.name, sample.group)


def normalise(image: np.ndarray, meta: Any) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 [3, H, W] network input: /255, minus mean, over std."""
    mean = np.asarray(meta.mean, np.float32)
    std = np.asarray(meta.std, np.float32)
    img = (image.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class CropSet(torch.utils.data.Dataset):
    """Supervised training items over (index, seed) keys: the frame at network scale, a
    random zoom and view (``AugmentConfig``; with ``whole_frames`` the view is the whole
    frame, mirrored and colour-jittered), as tensors.

    Item: ``image`` [3, ch, cw] float32 (normalised), ``depth`` [1, ch, cw] float32 metres
    (0 = invalid), ``focal_scale`` [] float32 = ((fx + fy) / 2) / f_c of the crop.
    A key's view depends only on its seed, so a resumed run sees the same crops.
    """

    def __init__(self, frames: Sequence[Sample], meta: Any, aug: AugmentConfig) -> None:
        self.frames, self.meta, self.aug = frames, meta, aug

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        idx, seed = int(key[0]), int(key[1])
        rng = np.random.default_rng(seed)
        s = random_rescale(to_network_scale(self.frames[idx], self.meta), rng, self.aug.scale_range)
        crop = s.depth.shape if self.aug.whole_frames else self.aug.crop_hw
        lo, hi = self.aug.crop_scale_range
        if lo < hi and not self.aug.whole_frames:  # (no draw otherwise: runs without it keep their random stream)
            f = float(rng.uniform(lo, hi))
            crop = (max(1, round(crop[0] * f)), max(1, round(crop[1] * f)))
        a = random_view(s, rng, crop, self.aug.flip, self.aug.color)
        return {"image": normalise(a.image, self.meta),
                "depth": torch.from_numpy(np.ascontiguousarray(a.depth))[None],
                "focal_scale": torch.tensor(a.camera.focal / self.meta.focal_canonical, dtype=torch.float32)}


def collate_crops(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack CropSet items, cutting every crop to the batch's smallest one around its centre
    (a crop of a crop keeps the focal length, so depth / focal_scale stays the target)."""
    h = min(int(it["image"].shape[1]) for it in items)
    w = min(int(it["image"].shape[2]) for it in items)
    out: dict[str, list[torch.Tensor]] = {"image": [], "depth": [], "focal_scale": []}
    for it in items:
        t = (int(it["image"].shape[1]) - h) // 2
        l = (int(it["image"].shape[2]) - w) // 2
        out["image"].append(it["image"][:, t:t + h, l:l + w])
        out["depth"].append(it["depth"][:, t:t + h, l:l + w])
        out["focal_scale"].append(it["focal_scale"])
    return {k: torch.stack(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- sequences

@dataclass
class SequenceView:
    """One self-supervised training item, numpy; S sources, crop ch x cw, margin m.

    ``image``: (ch, cw, 3) uint8, the network input (colour-jittered when asked);
    ``target``: the same pixels without jitter, which the photometric loss compares;
    ``target_valid``: (ch, cw) bool, False where the crop left the frame (padding);
    ``sources``: (S, ch + 2m, cw + 2m, 3) uint8, each source frame's window around the crop,
    ``source_valid`` (S, ch + 2m, cw + 2m) bool where that window holds real pixels;
    ``K``: (3, 3) target intrinsics in crop pixels; ``K_sources``: (S, 3, 3) in window pixels;
    ``T``: (S, 4, 4) float64 target camera -> source camera (optical frames, metres),
    mirrored with the images when ``flipped`` (T' = M T M, M = diag(-1, 1, 1, 1)).
    """

    image: np.ndarray
    target: np.ndarray
    target_valid: np.ndarray
    sources: np.ndarray
    source_valid: np.ndarray
    K: np.ndarray
    K_sources: np.ndarray
    T: np.ndarray
    flipped: bool


def _k(camera: Intrinsics) -> np.ndarray:
    """The 3x3 K of a camera (core.camera.k_matrix), float64."""
    return np.asarray(k_matrix(camera), np.float64).reshape(3, 3)


def window(img: np.ndarray, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """img[y0:y0+h, x0:x0+w] with zeros outside the image, and the mask of real pixels.

    y0, x0 may be negative and the window may pass the far edges.
    """
    H, W = img.shape[:2]
    out = np.zeros((h, w) + img.shape[2:], img.dtype)
    valid = np.zeros((h, w), bool)
    ya, yb, xa, xb = max(y0, 0), min(y0 + h, H), max(x0, 0), min(x0 + w, W)
    if ya < yb and xa < xb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = img[ya:yb, xa:xb]
        valid[ya - y0:yb - y0, xa - x0:xb - x0] = True
    return out, valid


def sequence_view(target: Sample, sources: Sequence[Sample], T: np.ndarray, rng: np.random.Generator,
                  crop_hw: tuple[int, int], scale_range: tuple[float, float], margin: int,
                  flip: bool, color: bool) -> SequenceView:
    """One zoom, crop position and mirror for a target frame and its sources (all at network
    scale already, see to_network_scale); ``T`` (S, 4, 4) maps target camera coordinates to
    each source camera's. A crop larger than the zoomed frame is padded (target_valid False).
    Colour jitter touches only the network input (Monodepth2 computes the loss on the
    original colours)."""
    r = draw_zoom(rng, scale_range)
    tgt = rescale(target, r)
    srcs = [rescale(s, r) for s in sources]
    h, w = tgt.depth.shape
    ch, cw = crop_hw
    y0 = int(rng.integers(min(0, h - ch), max(0, h - ch) + 1))
    x0 = int(rng.integers(min(0, w - cw), max(0, w - cw) + 1))
    t_img, t_valid = window(tgt.image, y0, x0, ch, cw)
    hs, ws = ch + 2 * margin, cw + 2 * margin
    t_cam = tgt.camera.cropped(x0, y0, cw, ch)
    s_cams = [s.camera.cropped(x0 - margin, y0 - margin, ws, hs) for s in srcs]
    cut = [window(s.image, y0 - margin, x0 - margin, hs, ws) for s in srcs]
    s_img = np.stack([c[0] for c in cut])
    s_valid = np.stack([c[1] for c in cut])
    T = np.asarray(T, np.float64)
    flipped = bool(flip and rng.random() < 0.5)
    if flipped:
        t_img, t_valid = t_img[:, ::-1], t_valid[:, ::-1]
        s_img, s_valid = s_img[:, :, ::-1], s_valid[:, :, ::-1]
        t_cam, s_cams = t_cam.mirrored(), [c.mirrored() for c in s_cams]
        T = MIRROR_X @ T @ MIRROR_X
    t_img = np.ascontiguousarray(t_img)
    image = color_jitter(t_img, rng) if color else t_img
    return SequenceView(image, t_img, np.ascontiguousarray(t_valid), np.ascontiguousarray(s_img),
                        np.ascontiguousarray(s_valid), _k(t_cam), np.stack([_k(c) for c in s_cams]), T, flipped)
