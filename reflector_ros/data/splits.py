"""Eigen-split style list files shared by NYU (sync layout) and KITTI: one frame per line."""
from __future__ import annotations

from pathlib import Path

from reflector_ros.core.errors import InputError


def read_split_file(split: Path, what: str = "image_path depth_path focal") -> list[tuple[str, str, float]]:
    """(image path, depth path or "None", focal in px) per non-empty line, paths made relative.

    Every malformed line is refused with its file and line number, so a typo in a split
    never turns into a silently shorter test set.
    """
    if not split.is_file():
        raise InputError(f"split file not found: {split}")
    rows: list[tuple[str, str, float]] = []
    for lineno, line in enumerate(split.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise InputError(f"{split}:{lineno}: expected '{what}', got {line!r}")
        try:
            focal = float(parts[2])
        except ValueError:
            raise InputError(f"{split}:{lineno}: focal {parts[2]!r} is not a number") from None
        if not 0 < focal < 1e5:
            raise InputError(f"{split}:{lineno}: focal {focal} out of range")
        rows.append((parts[0].lstrip("/"), parts[1].lstrip("/"), focal))
    return rows
