"""Point Fast DDS at our large-segment SHM profile before rclpy creates a participant.

Fast DDS's default 512 KB shared-memory segment sends VGA images, depth maps and
clouds over fragmented UDP, where best-effort readers lose most frames. The profile
(config/fastdds_shm.xml) only takes effect if the environment names it before
``rclpy.init``; a user's own profile or another rmw always wins.
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

PROFILE_NAME = "fastdds_shm.xml"
# Fast DDS 3.x (Kilted and later) reads the first, 2.x (Humble, Jazzy) the second.
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def profile_path() -> Path:
    """The installed share/reflector_ros/config copy if there is one, else the source tree's."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            installed = Path(get_package_share_directory("reflector_ros")) / "config" / PROFILE_NAME
            if installed.is_file():
                return installed
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (plain venv)
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2] / "config" / PROFILE_NAME


def apply_default_profile(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set both profile variables to our profile unless the user chose otherwise.

    Returns a line for the log when it set them, None when it left the environment alone
    (a profile already named, a non-Fast-DDS rmw, or no profile file found).
    """
    for var in PROFILE_VARS:
        if environ.get(var):
            return None
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return None
    path = profile_path()
    if not path.is_file():
        return None
    for var in PROFILE_VARS:
        environ[var] = str(path)
    return f"Fast DDS: using the large-message SHM profile {path} (set FASTDDS_DEFAULT_PROFILES_FILE to use your own)"
