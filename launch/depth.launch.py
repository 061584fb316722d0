"""Launch the Reflector depth node: `ros2 launch reflector_ros depth.launch.py image:=/camera/image_raw`.

Arguments left empty keep the value from params_file, so the YAML stays the one place
for settings and the command line only overrides what it names. The large-message
Fast DDS profile is exported for the processes this launch starts unless you already
named a profile (FASTDDS_DEFAULT_PROFILES_FILE / FASTRTPS_DEFAULT_PROFILES_FILE) or
use another rmw; the node logs which profile is in effect and who set it.

The params file's top key must match the node's full name: the shipped
config/depth.yaml uses `/**/reflector_depth:`, which matches under any namespace.
If the node exits with an error (it refused to start, or crashed), the launch ends with
an error too, instead of logging "process has died" and exiting 0.
Uses only launch / launch_ros APIs present since Humble.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import launch.logging
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, SetEnvironmentVariable
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PKG = "reflector_ros"


def _share_dir() -> Path:
    """share/reflector_ros when installed, else the source tree (launch/..)."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PKG))
    except Exception:  # noqa: BLE001  PackageNotFoundError, or AMENT_PREFIX_PATH unset
        return Path(__file__).resolve().parent.parent


def _as_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name}:='{text}' must be true or false")


def _fastdds_profile(context) -> list:
    """SetEnvironmentVariable actions for our profile, or none when the user chose otherwise."""
    env = dict(os.environ)
    env.update(getattr(context, "environment", {}) or {})
    try:
        from reflector_ros.ros.fastdds import PROFILE_VARS, SET_BY_VAR, apply_default_profile
    except ImportError:  # the node applies it itself at start-up anyway
        return []
    before = {k: env.get(k) for k in PROFILE_VARS}
    if apply_default_profile(env) is None:
        return []
    return ([SetEnvironmentVariable(k, env[k]) for k in PROFILE_VARS if env.get(k) != before[k]]
            + [SetEnvironmentVariable(SET_BY_VAR, "depth.launch.py")])


def _key_matches(key: str, fqn: str) -> bool:
    """rcl's rule for a params file's top key: a key without a leading slash is absolute
    (so `reflector_depth` is /reflector_depth only), `*` is one name part, `**` any number."""
    parts = [p for p in key.strip().split("/") if p]
    pattern = "".join("(/[^/]+)*" if p == "**" else "/" + re.escape(p).replace(r"\*", "[^/]*") for p in parts)
    return re.fullmatch(pattern or "/", fqn) is not None


def _params_file_keys(path: str, fqn: str) -> tuple[list[str], bool]:
    """(the file's top keys, whether one of them matches the node); unreadable files pass."""
    try:
        import yaml
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except Exception:  # noqa: BLE001  the node reports a broken file itself
        return [], True
    keys = [str(k) for k in doc] if isinstance(doc, dict) else []
    return keys, not keys or any(_key_matches(k, fqn) for k in keys)


class NodeFailed(RuntimeError):
    """Raised from the exit handler: launch then shuts down and returns a non-zero code."""


def _on_node_exit(event, context) -> None:
    """A node that exits with an error ends the launch with an error. During the launch's
    own shutdown (Ctrl-C) the node's exit is expected and passes."""
    code = event.returncode
    if code and not context.is_shutdown:
        raise NodeFailed(f"{event.process_name} exited with code {code} (see its log above); "
                         "ending the launch with an error")


def _node(context) -> list:
    cfg = {name: LaunchConfiguration(name).perform(context)
           for name in ("namespace", "image", "camera_info", "params_file", "model", "backend",
                        "use_sim_time", "publish_points")}
    params_file = cfg["params_file"] or str(_share_dir() / "config" / "depth.yaml")
    if not Path(params_file).is_file():
        raise FileNotFoundError(f"params_file '{params_file}' does not exist")
    overrides: dict[str, object] = {}
    if cfg["model"]:
        overrides["model"] = cfg["model"]
    if cfg["backend"]:
        overrides["backend"] = cfg["backend"]
    if cfg["use_sim_time"]:
        overrides["use_sim_time"] = _as_bool("use_sim_time", cfg["use_sim_time"])
    if cfg["publish_points"]:
        overrides["publish_points"] = _as_bool("publish_points", cfg["publish_points"])
    ns = cfg["namespace"].strip("/")
    fqn = f"/{ns}/reflector_depth" if ns else "/reflector_depth"
    keys, matched = _params_file_keys(params_file, fqn)
    if not matched:   # ROS ignores such a file silently: every value would stay at its default
        launch.logging.get_logger("depth.launch.py").warning(
            f"params_file {params_file}: no top key matches the node {fqn} (keys: {', '.join(keys)}), so ROS "
            f"ignores the whole file; use /**/reflector_depth: to match under any namespace")
    image = cfg["image"] or "image"
    node = Node(
        package=PKG,
        executable="depth_node",
        name="reflector_depth",
        namespace=cfg["namespace"],
        output="screen",
        parameters=[params_file] + ([overrides] if overrides else []),
        remappings=[("image", image), ("image/compressed", image + "/compressed"),
                    ("camera_info", cfg["camera_info"] or "camera_info")],
    )
    return _fastdds_profile(context) + [
        node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_node_exit))]


def generate_launch_description() -> LaunchDescription:
    args = [
        ("namespace", "", "Namespace of the node and of its relative topics."),
        ("image", "image", "Input image topic (sensor_msgs/Image; image/compressed follows it)."),
        ("camera_info", "camera_info", "Input CameraInfo topic."),
        ("params_file", "", "Node parameters YAML; empty = share/reflector_ros/config/depth.yaml."),
        ("model", "", "Model file (.onnx, .pt, engine); empty = params_file's (default: embedded model)."),
        ("backend", "", "auto | tensorrt | torch | torch-cuda | torch-cpu | onnxruntime | onnxruntime-cuda; empty = params_file's."),
        ("use_sim_time", "", "true to follow /clock (bag replay); empty = params_file's."),
        ("publish_points", "", "true | false: publish the PointCloud2; empty = params_file's."),
    ]
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in args]
        + [OpaqueFunction(function=_node)]
    )
