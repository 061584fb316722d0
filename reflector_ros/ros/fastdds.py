"""Point Fast DDS at our large-segment SHM profile before rclpy creates a participant.

Fast DDS's default 512 KB shared-memory segment sends VGA images, depth maps and
clouds over fragmented UDP, where best-effort readers lose most frames. The profile
(config/fastdds_shm.xml) only takes effect if the environment names it before
``rclpy.init``; a user's own profile or another rmw always wins. Whoever set it (the
node, depth.launch.py, the user), ``describe_profile`` gives the one log line that says
which profile is in effect.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

PROFILE_NAME = "fastdds_shm.xml"
# Fast DDS 3.x (Kilted and later) reads the first, 2.x (Humble, Jazzy) the second.
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
# Who named our profile, when it was not the node itself (depth.launch.py sets it with the profile).
SET_BY_VAR = "REFLECTOR_FASTDDS_PROFILE_SET_BY"
FASTDDS2_DISTROS = ("foxy", "galactic", "humble", "iron", "jazzy")


def _reads_legacy_variable(environ: MutableMapping[str, str]) -> bool:
    """False only where Fast DDS is known to be 3.x: there the rmw warns at every start-up
    that FASTRTPS_DEFAULT_PROFILES_FILE is deprecated, so we leave that one unset."""
    distro = environ.get("ROS_DISTRO", "").strip().lower()
    if distro:
        return distro in FASTDDS2_DISTROS
    try:  # pip-installed ROS (no ROS_DISTRO): the ros-fastdds wheel says which
        from importlib.metadata import PackageNotFoundError, version
        try:
            return int(version("ros-fastdds").split(".")[0]) < 3
        except (PackageNotFoundError, ValueError):
            return True
    except ImportError:
        return True


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
    """Point Fast DDS at our profile unless the user chose otherwise.

    Sets FASTDDS_DEFAULT_PROFILES_FILE, and FASTRTPS_DEFAULT_PROFILES_FILE too unless the
    installed Fast DDS is known to be 3.x (ROS_DISTRO, or the ros-fastdds wheel). Returns a line for the log when it set them, None when it left the environment alone
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
    environ[PROFILE_VARS[0]] = str(path)
    if _reads_legacy_variable(environ):
        environ[PROFILE_VARS[1]] = str(path)
    return f"Fast DDS: using the large-message SHM profile {path} (set FASTDDS_DEFAULT_PROFILES_FILE to use your own)"


def _same_file(a: str, b: Path) -> bool:
    try:
        return Path(a).resolve() == b.resolve() or Path(a).samefile(b)
    except OSError:
        return False


def describe_profile(environ: Mapping[str, str] = os.environ, set_by: str | None = None) -> tuple[str, bool]:
    """(one log line saying which Fast DDS profile is in effect, whether it deserves a warning).

    ``set_by`` names who applied our profile just now (the node); otherwise a profile
    of ours already in the environment is credited to ``SET_BY_VAR`` (depth.launch.py sets
    it) or to the environment. Covers our profile, the user's own, a named file that does
    not exist, another rmw, and Fast DDS with its defaults.
    """
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return (f"rmw {rmw}: the Fast DDS large-message profile does not apply; large images and clouds "
                f"depend on {rmw}'s own settings", False)
    named = [(var, environ[var]) for var in PROFILE_VARS if environ.get(var)]
    ours = profile_path()
    if not named:
        missing = "" if ours.is_file() else f"; the large-message profile {ours} is missing"
        return (f"Fast DDS: built-in defaults, no profile named in FASTDDS_DEFAULT_PROFILES_FILE (512 KB "
                f"shared-memory segment: VGA images and clouds go over fragmented UDP){missing}", True)
    var, value = named[0]
    marked = bool(environ.get(SET_BY_VAR)) and Path(value).name == PROFILE_NAME and Path(value).is_file()
    if _same_file(value, ours) or marked:
        who = set_by or environ.get(SET_BY_VAR) or f"the environment ({var})"
        return (f"Fast DDS: using the large-message SHM profile {value}, set by {who}; "
                f"name your own in FASTDDS_DEFAULT_PROFILES_FILE to change it", False)
    if not Path(value).is_file():
        return (f"Fast DDS: {var}={value} names no file, so Fast DDS runs on its built-in defaults "
                f"(VGA images and clouds go over fragmented UDP)", True)
    return (f"Fast DDS: using your profile {value} ({var}); large images and clouds need a large "
            f"shared-memory segment in it (see docs/fastdds.md)", False)
