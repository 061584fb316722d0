"""launch/depth.launch.py through launch's LaunchService, from a pip-installed prefix.

The launch runs in its own process (LaunchService wants the main thread for its
signal handlers); this process feeds it camera frames over real DDS and waits for
metric depth on the remapped, namespaced topics.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; runs in a ROS 2 install")
pytest.importorskip("rclpy")

from ros_helpers import Harness, image_array, make_camera_info, make_image_msg, node_env, test_rgb  # noqa: E402
from test_packaging import pip_install_prefix, site_packages  # noqa: E402

LAUNCHER = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

path, *pairs = sys.argv[1:]
service = LaunchService(noninteractive=True)
service.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(path), launch_arguments=[tuple(p.split(":=", 1)) for p in pairs]))
sys.exit(service.run())
"""


def _launch_env(prefix: Path) -> dict[str, str]:
    env = node_env()
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    # the installed package first, then whatever makes launch/launch_ros importable here
    env["PYTHONPATH"] = os.pathsep.join([str(site_packages(prefix))] + [p for p in sys.path if p and "site-packages" not in p])
    # lib/reflector_ros/depth_node runs `env python3`: this interpreter, as in an activated venv
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for var in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(var, None)  # the launch file must set it itself
    return env


def _children_environ(pid: int) -> list[dict[str, str]]:
    """Start-up environments of the direct children of pid (Linux /proc)."""
    envs = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                raw = (stat.parent / "environ").read_bytes()
                envs.append(dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv))
        except (OSError, IndexError, ValueError):
            continue
    return envs


@pytest.mark.timeout(180)
def test_launch_starts_the_node_and_it_answers_a_frame(tiny_model_dir: Path, tmp_path: Path):
    prefix = pip_install_prefix(tmp_path)
    launch_file = prefix / "share/reflector_ros/launch/depth.launch.py"
    ns = f"launch_test_{os.getpid()}"
    args = [f"namespace:={ns}", "image:=cam/image_raw", "camera_info:=cam/camera_info",
            f"model:={tiny_model_dir / 'tiny.onnx'}", "backend:=onnxruntime", "publish_points:=false"]
    log = tempfile.NamedTemporaryFile(prefix="reflector_launch_", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(launch_file), *args], env=_launch_env(prefix),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    from sensor_msgs.msg import Image

    h = Harness("launch_test_feeder")
    try:
        depth = h.subscribe(f"/{ns}/depth/image", Image)
        assert h.wait_publisher(f"/{ns}/depth/image", timeout=60), Path(log.name).read_text()
        # node names travel on ros_discovery_info, which can come after the endpoints
        named = h.wait_for(lambda: ("reflector_depth", f"/{ns}") in h.node.get_node_names_and_namespaces(), 15)
        assert named, h.node.get_node_names_and_namespaces()
        rgb = test_rgb(120, 160)
        for i in range(40):
            stamp = 1.0 + i * 0.1
            h.publish(f"/{ns}/cam/camera_info", make_camera_info(160, 120, fx=140.0, stamp=stamp))
            h.publish(f"/{ns}/cam/image_raw", make_image_msg(rgb, stamp=stamp), qos="best_effort")
            if h.wait_for(lambda: len(depth) > 0, timeout=0.5):
                break
        assert depth, "no depth/image from the launched node:\n" + Path(log.name).read_text()
        msg = depth[0]
        assert (msg.width, msg.height, msg.encoding) == (160, 120, "32FC1")
        arr = image_array(msg)
        assert np.isfinite(arr).any() and np.nanmin(arr) > 0
        text = Path(log.name).read_text()
        assert "Traceback" not in text, text
        if Path("/proc/self/environ").exists():  # the launch file, not the node, set the profile
            shared = str(prefix / "share/reflector_ros/config/fastdds_shm.xml")
            envs = _children_environ(proc.pid)
            assert any(e.get("FASTDDS_DEFAULT_PROFILES_FILE") == shared for e in envs), \
                [e.get("FASTDDS_DEFAULT_PROFILES_FILE") for e in envs]
    finally:
        h.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        os.unlink(log.name)
