"""The one record every dataset yields, whatever its on-disk format."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    image: np.ndarray   # (H, W, 3) uint8 RGB
    depth: np.ndarray   # (H, W) float32 metres along optical Z; 0 = invalid
    fx: float
    fy: float
    cx: float
    cy: float
    name: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"{self.name}: image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if self.depth.shape != self.image.shape[:2]:
            raise ValueError(f"{self.name}: depth {self.depth.shape} does not match image {self.image.shape[:2]}")
