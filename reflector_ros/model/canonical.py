"""Metric3D canonical camera: the network works at focal f_c, metres scale with f_net / f_c.

focal_scale = f_net / f_c (reflector_ros.meta.focal_scale). Training targets are
depth / focal_scale; inference multiplies the network output by focal_scale.
"""
from __future__ import annotations

from torch import Tensor


def _per_image(scale: Tensor, like: Tensor) -> Tensor:
    """[B] scale -> broadcastable against [B, ...]."""
    return scale.reshape(-1, *([1] * (like.dim() - 1)))


def to_canonical(depth: Tensor, focal_scale: Tensor) -> Tensor:
    """Metric depth [B,...] -> canonical-camera depth (training target)."""
    return depth / _per_image(focal_scale, depth)


def from_canonical(canonical: Tensor, focal_scale: Tensor) -> Tensor:
    """Canonical-camera depth [B,...] -> metres for the real camera."""
    return canonical * _per_image(focal_scale, canonical)
