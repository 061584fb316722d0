"""A ROS camera_calibration YAML (the file camera_info_manager reads) as CameraInfo fields.

Offline tools need the focal length to turn canonical depth into metres; users already
have this file from `ros2 run camera_calibration cameracalibrator`. It is read into the
same ``CameraInfoFields`` as a CameraInfo message, so ``core.camera_info.read_calibration``
treats both alike.
"""
from __future__ import annotations

from pathlib import Path

from reflector_ros.core.camera_info import CameraInfoFields
from reflector_ros.core.errors import InputError
from reflector_ros.core.limits import check_size
from reflector_ros.core.yamlfile import read_mapping


def _matrix(doc: dict, key: str, rows: int, cols: int, path: Path) -> tuple[float, ...] | None:
    m = doc.get(key)
    if m is None:
        return None
    data = m.get("data") if isinstance(m, dict) else None
    if not isinstance(data, list) or len(data) != rows * cols:
        raise InputError(f"{path}: {key}.data must be a list of {rows * cols} numbers")
    try:
        return tuple(float(x) for x in data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {key}.data holds a non-number ({exc})") from None


def load_camera_yaml(path: str | Path) -> CameraInfoFields:
    """K, D, R, P, the distortion model and the calibrated size of a camera_calibration YAML.

    A missing camera_matrix or projection_matrix reads as zeros (not filled in); whether
    what is there describes a camera is read_calibration's decision, as for a CameraInfo.
    InputError for unreadable files, bad YAML, a bad size or malformed matrices.
    """
    path = Path(path)
    doc = read_mapping(path, "camera info", "a camera_calibration mapping (image_width, camera_matrix, ...)")
    try:
        width, height = int(doc["image_width"]), int(doc["image_height"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: image_width and image_height are required integers") from None
    check_size(width, height, f"{path}: calibrated image")
    k = _matrix(doc, "camera_matrix", 3, 3, path)
    p = _matrix(doc, "projection_matrix", 3, 4, path)
    if k is None and p is None:
        raise InputError(f"{path}: neither camera_matrix nor projection_matrix is present")
    d = doc.get("distortion_coefficients")
    d_data = d.get("data") if isinstance(d, dict) else [] if d is None else None
    if not isinstance(d_data, list):
        raise InputError(f"{path}: distortion_coefficients.data must be a list of numbers")
    try:
        d_vals = tuple(float(x) for x in d_data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: distortion_coefficients.data holds a non-number ({exc})") from None
    r = _matrix(doc, "rectification_matrix", 3, 3, path) or (0.0,) * 9
    return CameraInfoFields(k or (0.0,) * 9, d_vals, r, p or (0.0,) * 12,
                            str(doc.get("distortion_model") or "plumb_bob"), width, height)
