"""launch/depth.launch.py through launch's LaunchService, from a pip-installed prefix.

The launch runs in its own process (LaunchService wants the main thread for its
signal handlers); this process feeds it camera frames over real DDS and waits for
metric depth on the remapped, namespaced topics. Also: a params file under a namespace,
SIGTERM to the node under launch, and a node that refuses to start ending the launch
with an error.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; runs in a ROS 2 install")
pytest.importorskip("rclpy")

from ros_helpers import Harness, image_array, make_camera_info, make_image_msg, node_env, test_rgb  # noqa: E402
from test_node_faults import get_parameters  # noqa: E402
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


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    return pip_install_prefix(tmp_path_factory.mktemp("launch_prefix"))


def _launch_env(prefix: Path) -> dict[str, str]:
    env = node_env()
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    # the installed package first, then whatever makes launch/launch_ros importable here
    env["PYTHONPATH"] = os.pathsep.join([str(site_packages(prefix))] + [p for p in sys.path if p and "site-packages" not in p])
    # lib/reflector_ros/depth_node runs `env python3`: this interpreter, as in an activated venv
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for var in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "REFLECTOR_FASTDDS_PROFILE_SET_BY"):
        env.pop(var, None)  # the launch file must set it itself
    return env


def _children(pid: int) -> list[int]:
    """Direct children of pid (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


class Launch:
    """`ros2 launch reflector_ros depth.launch.py ARGS` as LaunchService runs it, in a subprocess."""

    def __init__(self, prefix: Path, *args: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="reflector_launch_", suffix=".log", delete=False)
        launch_file = prefix / "share/reflector_ros/launch/depth.launch.py"
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(launch_file), *args],
                                     env=_launch_env(prefix), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def node_pid(self) -> int | None:
        kids = _children(self.proc.pid)
        return kids[0] if len(kids) == 1 else None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            if self.wait(20) is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        os.unlink(self.log.name)


def _params_file(prefix: Path, tmp_path: Path) -> Path:
    """The installed config/depth.yaml (the shipped top key) with points_stride 4 and max_depth 7.5."""
    text = (prefix / "share/reflector_ros/config/depth.yaml").read_text()
    text, n1 = re.subn(r"(?m)^(\s+points_stride:) 1\b", r"\1 4", text)
    text, n2 = re.subn(r"(?m)^(\s+max_depth:) 10\.0\b", r"\1 7.5", text)
    assert n1 == n2 == 1
    path = tmp_path / "robot_params.yaml"
    path.write_text(text)
    return path


@pytest.mark.timeout(300)
def test_launch_starts_the_node_and_it_answers_a_frame(tiny_model_dir: Path, prefix: Path):
    ns = f"launch_test_{os.getpid()}"
    launch = Launch(prefix, f"namespace:={ns}", "image:=cam/image_raw", "camera_info:=cam/camera_info",
                    f"model:={tiny_model_dir / 'tiny.onnx'}", "backend:=onnxruntime", "publish_points:=false")
    from sensor_msgs.msg import Image

    h = Harness("launch_test_feeder")
    try:
        depth = h.subscribe(f"/{ns}/depth/image", Image)
        assert h.wait_publisher(f"/{ns}/depth/image", timeout=60), launch.text()
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
        assert depth, "no depth/image from the launched node:\n" + launch.text()
        msg = depth[0]
        assert (msg.width, msg.height, msg.encoding) == (160, 120, "32FC1")
        arr = image_array(msg)
        assert np.isfinite(arr).any() and np.nanmin(arr) > 0
        # the launch file, not the node, set the profile, and the node's log says so
        shared = str(prefix / "share/reflector_ros/config/fastdds_shm.xml")
        pid = launch.node_pid()
        assert pid is not None and _environ(pid).get("FASTDDS_DEFAULT_PROFILES_FILE") == shared
        assert f"Fast DDS: using the large-message SHM profile {shared}, set by depth.launch.py" in launch.text()
        # Ctrl-C on the launch: the node ends cleanly, and so does the launch
        os.killpg(launch.proc.pid, signal.SIGINT)
        assert launch.wait(20) == 0, launch.text()
        text = launch.text()
        assert "process has finished cleanly" in text and "Traceback" not in text, text
    finally:
        h.close()
        launch.close()


@pytest.mark.timeout(300)
def test_params_file_under_a_namespace_and_sigterm(tiny_model_dir: Path, prefix: Path, tmp_path: Path):
    """namespace:=robot1 params_file:=<the shipped key, points_stride 4, max_depth 7.5>: both in
    effect. Then SIGTERM to the node (what launch sends after SIGINT times out): a clean exit."""
    ns = f"robot1_{os.getpid()}"
    launch = Launch(prefix, f"namespace:={ns}", f"params_file:={_params_file(prefix, tmp_path)}",
                    f"model:={tiny_model_dir / 'tiny.onnx'}", "backend:=onnxruntime")
    h = Harness("launch_params_test")
    try:
        values = get_parameters(h, f"/{ns}/reflector_depth", ["points_stride", "max_depth", "backend"], 90)
        assert values == {"points_stride": 4, "max_depth": 7.5, "backend": "onnxruntime"}, launch.text()
        pid = launch.node_pid()
        assert pid is not None, launch.text()
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        assert h.wait_for(lambda: not Path(f"/proc/{pid}").exists() or launch.proc.poll() is not None, 10)
        print(f"\nSIGTERM under launch: the node was gone after {time.monotonic() - t0:.2f} s")
        assert launch.wait(20) == 0, launch.text()   # its only node ended cleanly: the launch is done
        text = launch.text()
        assert "SIGTERM: shutting down" in text and "process has finished cleanly" in text, text
        assert "Traceback" not in text and "process has died" not in text, text
    finally:
        h.close()
        launch.close()


@pytest.mark.timeout(300)
def test_a_node_that_refuses_to_start_ends_the_launch_with_an_error(prefix: Path, tmp_path: Path):
    """backend:=nonsense: the launch exits non-zero. The params file here has the old top key,
    which ROS ignores under a namespace: the launch says so."""
    old_key = tmp_path / "old_key.yaml"
    old_key.write_text("reflector_depth:\n  ros__parameters:\n    points_stride: 4\n")
    ns = f"refuse_{os.getpid()}"
    launch = Launch(prefix, f"namespace:={ns}", "backend:=nonsense", f"params_file:={old_key}")
    try:
        code = launch.wait(120)
        text = launch.text()
        assert code is not None, "the launch kept running after its node refused to start:\n" + text
        assert code != 0, text
        assert "refusing to start" in text and "backend" in text, text
        assert "exited with code 1" in text and "ending the launch with an error" in text, text
        assert (f"params_file {old_key}: no top key matches the node /{ns}/reflector_depth (keys: reflector_depth)"
                in text), text
    finally:
        launch.close()


def _launch_module():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "launch" / "depth.launch.py"
    spec = importlib.util.spec_from_file_location("depth_launch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("key,fqn,matches", [
    ("reflector_depth", "/robot1/reflector_depth", False),      # the old key: absolute, no namespace
    ("reflector_depth", "/reflector_depth", True),
    ("/**/reflector_depth", "/robot1/reflector_depth", True),
    ("/**/reflector_depth", "/a/b/reflector_depth", True),
    ("/**/reflector_depth", "/reflector_depth", True),
    ("/**", "/robot1/reflector_depth", True),
    ("/*/reflector_depth", "/a/b/reflector_depth", False),
    ("/robot2/reflector_depth", "/robot1/reflector_depth", False),
])
def test_params_key_rule(key: str, fqn: str, matches: bool):
    assert _launch_module()._key_matches(key, fqn) is matches
