"""The one interface every inference backend implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from reflector_ros.meta import ModelMeta


@dataclass
class DepthResult:
    depth: np.ndarray                 # (h, w) float32 metres along optical Z, NaN invalid
    confidence: np.ndarray            # (h, w) float32 in [0, 1]
    points: np.ndarray | None = None  # (h, w, 3) float32 xyz in the optical frame, if rays given
    timings_ms: dict[str, float] | None = None  # preprocess / inference / postprocess


class Backend(Protocol):
    name: str          # "tensorrt", "torch-cuda", "torch-cpu", "onnxruntime-cpu", ...
    meta: ModelMeta

    def run(self, rgb: np.ndarray, scale: float, out_hw: tuple[int, int],
            rays: np.ndarray | None = None) -> DepthResult:
        """rgb: (H, W, 3) uint8 RGB. scale: focal_scale() for this camera.

        Pre-processing (resize, normalise), the network, and post-processing (resize
        back to out_hw, canonical de-scaling, confidence, optional back-projection
        through ``rays`` of shape (out_h, out_w, 3)) all happen on the backend's device,
        with one device-to-host copy per output.
        """
        ...
