"""The one record every dataset yields, whatever its on-disk format."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reflector_ros.core.camera import Intrinsics


@dataclass
class Sample:
    """One RGB-D frame and its camera.

    image: (H, W, 3) uint8 RGB; depth: (H, W) float32 metres along optical Z, 0 = invalid;
    camera: the frame's pinhole camera (``core.camera.Intrinsics``, the project's one
    camera type), W x H like the image; name: for logs and file names; group: where the
    frame comes from (real_eval's per-place groups), for per-group tables.
    ValueError when the arrays or the camera do not fit together.
    """
    image: np.ndarray
    depth: np.ndarray
    camera: Intrinsics
    name: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"{self.name}: image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if self.depth.shape != self.image.shape[:2]:
            raise ValueError(f"{self.name}: depth {self.depth.shape} does not match image {self.image.shape[:2]}")
        if not isinstance(self.camera, Intrinsics):
            raise ValueError(f"{self.name}: camera must be core.camera.Intrinsics, got {type(self.camera).__name__}")
        if (self.camera.width, self.camera.height) != (self.image.shape[1], self.image.shape[0]):
            raise ValueError(f"{self.name}: camera is {self.camera.width}x{self.camera.height}, image "
                             f"{self.image.shape[1]}x{self.image.shape[0]}")
