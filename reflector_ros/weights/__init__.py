"""The embedded default model, used whenever no model is named."""
from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent
DEFAULT_STEM = "reflector_small"


def default_model(suffix: str = ".onnx") -> Path:
    """Path of the shipped model: '.onnx' (fused graph) or '.pt' (checkpoint)."""
    return MODEL_DIR / f"{DEFAULT_STEM}{suffix}"
