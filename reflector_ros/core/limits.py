"""The one size limit for every frame, calibration and output the project accepts.

No camera produces a side of 16384 pixels or more; refusing such sizes before anything
is allocated keeps a corrupt header or a typo from exhausting memory.
"""
from __future__ import annotations

import numbers

from reflector_ros.core.errors import InputError

MAX_SIDE = 16383                   # largest accepted image side, pixels (inclusive)
MAX_PIXELS = 64 * 1024 * 1024      # largest accepted width x height


def check_size(width: object, height: object, what: str = "image") -> tuple[int, int]:
    """(width, height) as ints when each side is an integer in 1..MAX_SIDE and the area is at
    most MAX_PIXELS; otherwise InputError naming ``what``."""
    for name, val in (("width", width), ("height", height)):
        if isinstance(val, bool) or not isinstance(val, numbers.Integral) or not 1 <= int(val) <= MAX_SIDE:
            raise InputError(f"{what} {name} {val!r} is not a usable image size (1..{MAX_SIDE} per side)")
    w, h = int(width), int(height)  # type: ignore[call-overload]
    if w * h > MAX_PIXELS:
        raise InputError(f"{what} size {w}x{h} is over the {MAX_PIXELS} pixel limit")
    return w, h
