"""The one camera_info reader: CameraInfo fields -> the Calibration of the frames they describe.

The node (sensor_msgs/CameraInfo), `reflector infer` (camera_calibration YAML, bags) and
training bags all read a calibration through ``read_calibration``, so the same message gives
the same camera everywhere:

- K describes the raw camera when it is filled in; a calibration made at another
  resolution is scaled (and its roi honoured) by ``core.rectify.calibration_at``.
- Some drivers fill only P (K all zeros) on rectified topics: the frames are then taken
  as already rectified, in P's camera (K = P's 3x3, no distortion, R = I).
- Neither K nor P describing a camera is refused.
- A camera_info of another aspect ratio than the image (the driver's, on a topic or in a
  bag) is scaled anyway, with a note (``aspect_note``) the caller shows: the node warns
  and reports it in /diagnostics, `reflector infer` warns for a bag's own camera_info.
  A calibration file the user hands to `reflector infer --camera-info` is refused at
  another aspect ratio unless they ask for scaling (``--scale-calibration``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reflector_ros.core.errors import InputError
from reflector_ros.core.rectify import Calibration, calibration_at

ASPECT_TOLERANCE = 0.02   # relative difference of width/height ratios above which a calibration is suspect


@dataclass(frozen=True)
class CameraInfoFields:
    """The calibration fields of a sensor_msgs/CameraInfo (or a camera_calibration YAML) as
    plain, hashable tuples: cheap to compare, and picklable for data loader workers.

    width, height: the calibrated size (0 = as the image); roi: (x, y, w, h), zeros = none.
    """
    k: tuple[float, ...]
    d: tuple[float, ...]
    r: tuple[float, ...]
    p: tuple[float, ...]
    model: str
    width: int
    height: int
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)

    @classmethod
    def from_msg(cls, msg: Any) -> "CameraInfoFields":
        """From any object with CameraInfo's attributes (rclpy message, rosbags message)."""
        roi = msg.roi
        return cls(tuple(float(v) for v in msg.k), tuple(float(v) for v in msg.d),
                   tuple(float(v) for v in msg.r), tuple(float(v) for v in msg.p),
                   str(msg.distortion_model), int(msg.width), int(msg.height),
                   (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)))

    def checked(self) -> "CameraInfoFields":
        """self, or InputError (saying why) when these fields describe no usable camera at
        any image size: the check a node or a bag reader makes once per new camera_info.
        Without a calibrated size, a 640x480 image stands in (only the size checks use it)."""
        read_calibration(self, calibrated_size(self, (640, 480)))
        return self


def _describes_camera(m: Sequence[float], stride: int) -> bool:
    """A 3x3 (stride 3) or 3x4 (stride 4) row-major matrix with finite, positive focal lengths."""
    if len(m) != 3 * stride or not all(math.isfinite(v) for v in m):
        return False
    return m[0] > 0 and m[stride + 1] > 0


def calibrated_size(fields: CameraInfoFields, image_wh: tuple[int, int]) -> tuple[int, int]:
    """The size the calibration was made at (0 means: the image's own)."""
    if fields.width <= 0 or fields.height <= 0:
        return int(image_wh[0]), int(image_wh[1])
    return fields.width, fields.height


def aspect_note(calibrated_wh: tuple[int, int], image_wh: tuple[int, int]) -> str | None:
    """A sentence when a calibration's aspect ratio differs from the image's by more than
    ASPECT_TOLERANCE (scaling it then stretches fx against fy), else None. The roi, if any,
    is the calibrated area."""
    (cw, ch), (w, h) = calibrated_wh, image_wh
    a, b = cw / ch, w / h
    if abs(a - b) <= ASPECT_TOLERANCE * b:
        return None
    return (f"the calibration is for {cw}x{ch} but the image is {w}x{h}: another aspect ratio "
            f"({a:.3f} vs {b:.3f}), so scaling it stretches fx against fy; check that camera_info "
            "belongs to this image stream")


def read_calibration(fields: CameraInfoFields, image_wh: tuple[int, int]) -> tuple[Calibration, list[str]]:
    """The calibration of frames of ``image_wh`` (width, height), and notes for the user
    (P-only reading, aspect mismatch). InputError when neither K nor P describes a camera."""
    w, h = int(image_wh[0]), int(image_wh[1])
    cw, ch = calibrated_size(fields, (w, h))
    roi = fields.roi if fields.roi[2] > 0 and fields.roi[3] > 0 else None
    area = (roi[2], roi[3]) if roi is not None else (cw, ch)
    notes: list[str] = []
    if _describes_camera(fields.k, 3):
        k, d, r, p = fields.k, fields.d, fields.r, fields.p
    elif _describes_camera(fields.p, 4):
        p = fields.p
        k = (p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10])
        d, r = (), (0.0,) * 9
        notes.append("camera_info has no K but a valid P: the image is taken as rectified, in P's camera")
    else:
        raise InputError("camera_info describes no camera: K is not filled in (uncalibrated camera) and P has "
                         "no positive focal lengths either; metric depth needs the focal length")
    note = aspect_note(area, (w, h))
    if note:
        notes.append(note)
    cal = calibration_at(list(k), list(d), list(r), list(p), fields.model, (cw, ch), (w, h), roi)
    return cal, notes
