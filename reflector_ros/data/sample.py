"""The one record every dataset yields, whatever its on-disk format."""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from reflector_ros.core.camera import Intrinsics


@dataclass
class Sample:
    image: np.ndarray   # (H, W, 3) uint8 RGB
    depth: np.ndarray   # (H, W) float32 metres along optical Z; 0 = invalid
    fx: float
    fy: float
    cx: float
    cy: float
    name: str = ""
    group: str = ""     # where the frame comes from (real_eval's per-place groups), for per-group tables

    @property
    def camera(self) -> "Intrinsics":
        """The frame's camera as the project's one camera type."""
        from reflector_ros.core.camera import Intrinsics

        return Intrinsics(self.fx, self.fy, self.cx, self.cy, self.image.shape[1], self.image.shape[0])

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"{self.name}: image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if self.depth.shape != self.image.shape[:2]:
            raise ValueError(f"{self.name}: depth {self.depth.shape} does not match image {self.image.shape[:2]}")
