"""A plain `pip install` gives the ROS 2 layout, so `ros2 launch reflector_ros ...` resolves from it.

colcon is not needed: setup.py ships the ament index marker, launch, config and
lib/reflector_ros/depth_node as data files. The install runs from a copy of the
working tree into a throw-away prefix (non-editable, no dependencies, no network).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "out", "runs", "engines", "*.egg-info",
                               "__pycache__", ".pytest_cache", ".mypy_cache", "*.engine", "*.plan")


def site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def pip_install_prefix(tmp: Path) -> Path:
    """Install the working tree into tmp/prefix the way a user's `pip install .` would.

    --ignore-installed: otherwise pip uninstalls the developer's editable install first.
    """
    src, prefix = tmp / "src", tmp / "prefix"
    shutil.copytree(REPO, src, ignore=_SKIP)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--ignore-installed", "--prefix", str(prefix), str(src)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return prefix


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    return pip_install_prefix(tmp_path_factory.mktemp("pip_install"))


@pytest.mark.timeout(300)
def test_ros_layout_under_the_prefix(prefix: Path):
    share = prefix / "share" / "reflector_ros"
    expected = [
        prefix / "share/ament_index/resource_index/packages/reflector_ros",
        share / "package.xml",
        share / "launch/depth.launch.py",
        *(share / "config" / name for name in ("depth.yaml", "fastdds_shm.xml", "nav2_costmap.yaml", "reflector.rviz")),
        prefix / "lib/reflector_ros/depth_node",
    ]
    missing = [str(p.relative_to(prefix)) for p in expected if not p.is_file()]
    assert not missing, f"missing under the prefix: {missing}"
    node = prefix / "lib/reflector_ros/depth_node"
    assert os.access(node, os.X_OK), f"{node} is not executable"
    assert "<name>reflector_ros</name>" in (share / "package.xml").read_text()
    assert (site_packages(prefix) / "reflector_ros" / "ros" / "fastdds.py").is_file()


@pytest.mark.timeout(300)
def test_ament_index_finds_the_share_dir(prefix: Path, monkeypatch):
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert Path(get_package_share_directory("reflector_ros")) == prefix / "share" / "reflector_ros"
    assert Path(get_package_prefix("reflector_ros")) == prefix


@pytest.mark.timeout(300)
def test_installed_fastdds_profile_is_the_shared_copy(prefix: Path):
    """profile_path() of the installed package resolves to share/, not to a source tree."""
    env = {**os.environ, "AMENT_PREFIX_PATH": str(prefix), "PYTHONPATH": str(site_packages(prefix))}
    out = subprocess.run([sys.executable, "-c", "from reflector_ros.ros.fastdds import profile_path; print(profile_path())"],
                         cwd=str(prefix), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == prefix / "share/reflector_ros/config/fastdds_shm.xml"


@pytest.mark.timeout(120)
def test_installed_depth_node_runs_the_node(prefix: Path):
    """lib/reflector_ros/depth_node (what `ros2 run`/`ros2 launch` execute) starts the real node.

    A bad parameter makes the node refuse with its own message, which proves the script
    reached reflector_ros.ros.main from the installed copy.
    """
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(prefix), "PYTHONPATH": str(site_packages(prefix)),
           "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
    out = subprocess.run([str(prefix / "lib/reflector_ros/depth_node"), "--ros-args", "-p", "points_stride:=0"],
                         cwd=str(prefix), env=env, capture_output=True, text=True, timeout=100)
    assert out.returncode != 0
    assert "points_stride" in out.stdout + out.stderr, out.stdout + out.stderr
