"""The large-message Fast DDS profile: its content, when it is applied, and that it delivers.

The delivery test is the reason the profile exists: a VGA PointCloud2 (~4.9 MB) at 30 Hz
between two processes reaches a best-effort reader only when the *writer* has a large
shared-memory segment. Run as a script, this file is the publisher or the subscriber.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reflector_ros.ros.fastdds import PROFILE_VARS, SET_BY_VAR, apply_default_profile, describe_profile, profile_path  # noqa: E402

NS = {"d": "http://www.eprosima.com"}
VGA = (480, 640)
N_FRAMES = 150
RATE_HZ = 30.0


# ----------------------------------------------------------------------------- the profile

def test_profile_is_a_default_participant_with_big_shm_and_udp():
    path = profile_path()
    assert path.is_file(), path
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.eprosima.com}dds"
    descs = {d.findtext("d:transport_id", namespaces=NS): d
             for d in root.findall("d:profiles/d:transport_descriptors/d:transport_descriptor", NS)}
    kinds = {tid: d.findtext("d:type", namespaces=NS) for tid, d in descs.items()}
    assert sorted(kinds.values()) == ["SHM", "UDPv4"]
    shm = next(d for d in descs.values() if d.findtext("d:type", namespaces=NS) == "SHM")
    assert int(shm.findtext("d:segment_size", namespaces=NS)) == 64 * 1024 * 1024
    parts = root.findall("d:profiles/d:participant", NS)
    assert len(parts) == 1 and parts[0].get("is_default_profile") == "true"
    rtps = parts[0].find("d:rtps", NS)
    assert rtps.findtext("d:useBuiltinTransports", namespaces=NS) == "false"
    used = [t.text for t in rtps.findall("d:userTransports/d:transport_id", NS)]
    assert sorted(used) == sorted(descs)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_apply_sets_both_variables_for_fast_dds_2(distro):
    env: dict[str, str] = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "ROS_DISTRO": distro}
    line = apply_default_profile(env)
    assert line is not None and str(profile_path()) in line
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == env["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(profile_path())


def test_apply_skips_the_deprecated_variable_on_fast_dds_3():
    """Kilted's rmw warns at every start-up when FASTRTPS_DEFAULT_PROFILES_FILE is set."""
    env = {"ROS_DISTRO": "kilted"}  # no RMW_IMPLEMENTATION: Fast DDS is the default rmw
    assert apply_default_profile(env) is not None
    assert env == {"ROS_DISTRO": "kilted", "FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path())}


@pytest.mark.parametrize("var", PROFILE_VARS)
def test_apply_keeps_a_users_own_profile(var):
    env = {var: "/etc/my_profile.xml", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    assert apply_default_profile(env) is None
    assert env == {var: "/etc/my_profile.xml", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}


def test_apply_leaves_other_rmws_alone():
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert apply_default_profile(env) is None
    assert env == {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}


def test_empty_variable_counts_as_unset():
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": ""}
    assert apply_default_profile(env) is not None
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(profile_path())


# ----------------------------------------------------------------------------- the log line

def test_describe_names_who_set_our_profile():
    env: dict[str, str] = {"ROS_DISTRO": "jazzy"}
    assert apply_default_profile(env) is not None
    line, warn = describe_profile(env, set_by="the node")
    assert line.startswith(f"Fast DDS: using the large-message SHM profile {profile_path()}, set by the node;")
    assert not warn
    launched = {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path()), SET_BY_VAR: "depth.launch.py"}
    assert ", set by depth.launch.py;" in describe_profile(launched)[0]
    exported = {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path())}
    assert ", set by the environment (FASTDDS_DEFAULT_PROFILES_FILE);" in describe_profile(exported)[0]


def test_describe_a_users_profile_a_missing_file_and_another_rmw(tmp_path):
    own = tmp_path / "mine.xml"
    own.write_text("<dds/>")
    line, warn = describe_profile({"FASTDDS_DEFAULT_PROFILES_FILE": str(own)})
    assert line.startswith(f"Fast DDS: using your profile {own} (FASTDDS_DEFAULT_PROFILES_FILE)") and not warn
    # our marker does not turn somebody else's file into ours
    line, _ = describe_profile({"FASTDDS_DEFAULT_PROFILES_FILE": str(own), SET_BY_VAR: "depth.launch.py"})
    assert "your profile" in line
    line, warn = describe_profile({"FASTRTPS_DEFAULT_PROFILES_FILE": "/nonexistent/p.xml"})
    assert "FASTRTPS_DEFAULT_PROFILES_FILE=/nonexistent/p.xml names no file" in line and warn
    line, warn = describe_profile({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp",
                                   "FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path())})
    assert line.startswith("rmw rmw_cyclonedds_cpp: the Fast DDS large-message profile does not apply") and not warn
    line, warn = describe_profile({"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"})
    assert line.startswith("Fast DDS: built-in defaults") and warn


# ----------------------------------------------------------------------------- delivery

def _vga_cloud_msg():
    """A VGA xyz+rgb PointCloud2 built by the node's own code path (pack_cloud + cloud_msg)."""
    from std_msgs.msg import Header

    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.core.pointcloud import pack_cloud, ray_table
    from reflector_ros.ros.convert import cloud_msg

    h, w = VGA
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 8.0, size=(h, w)).astype(np.float32)
    rgb = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    rays = ray_table(Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=w, height=h))
    buf = pack_cloud(depth, rays, rgb=rgb)
    return cloud_msg(Header(frame_id="camera_optical_frame"), buf, h, w, with_rgb=True)


def _publisher(n: int, rate: float) -> int:
    import rclpy
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("fastdds_cloud_pub")
    pub = node.create_publisher(PointCloud2, "fastdds_test/cloud", 5)  # reliable, like the node's outputs
    msg = _vga_cloud_msg()
    print(f"cloud: {len(msg.data)} bytes", flush=True)
    end = time.monotonic() + 15
    while pub.get_subscription_count() < 1 and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # let the match settle on both sides
    due = time.monotonic()
    for i in range(n):
        now_ns = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
        msg.header.frame_id = f"camera_optical_frame:{i}"
        pub.publish(msg)
        due += 1.0 / rate
        time.sleep(max(0.0, due - time.monotonic()))
    time.sleep(1.0)  # lets the last frames leave before the participant goes
    node.destroy_node()
    rclpy.shutdown()
    return 0


def _subscriber(n: int, timeout: float) -> int:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("fastdds_cloud_sub")
    seen: set[int] = set()
    hops: list[float] = []

    def on_cloud(msg: PointCloud2) -> None:
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        hops.append((time.time_ns() - sent) / 1e6)
        seen.add(int(msg.header.frame_id.rsplit(":", 1)[1]))

    node.create_subscription(PointCloud2, "fastdds_test/cloud", on_cloud, qos_profile_sensor_data)
    print("READY", flush=True)
    end = time.monotonic() + timeout
    publisher_seen = False
    while time.monotonic() < end and len(seen) < n:
        rclpy.spin_once(node, timeout_sec=0.05)
        count = node.count_publishers("fastdds_test/cloud")
        if count:
            publisher_seen = True
        elif publisher_seen:  # the publisher has finished and gone
            break
    print(json.dumps({"received": len(seen), "hop_ms_p50": float(np.median(hops)) if hops else None}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def _run_pair(with_profile: bool) -> dict:
    """Subscriber and publisher processes; only the publisher gets the profile (or not)."""
    from ros_helpers import node_env

    base = {k: v for k, v in node_env().items() if k not in PROFILE_VARS}
    pub_env = dict(base)
    if with_profile:
        apply_default_profile(pub_env)
    me = str(Path(__file__).resolve())
    sub = subprocess.Popen([sys.executable, me, "sub", str(N_FRAMES), "20"], env=base,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert sub.stdout is not None and sub.stdout.readline().strip() == "READY"
        pub = subprocess.run([sys.executable, me, "pub", str(N_FRAMES), str(RATE_HZ)], env=pub_env,
                             capture_output=True, text=True, timeout=40)
        assert pub.returncode == 0, pub.stdout + pub.stderr
        out, _ = sub.communicate(timeout=25)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    result = json.loads(out.strip().splitlines()[-1])
    result["cloud"] = pub.stdout.strip().splitlines()[0]
    return result


@pytest.mark.timeout(90)
def test_vga_cloud_reaches_a_best_effort_reader_with_the_profile():
    pytest.importorskip("rclpy")
    with_profile = _run_pair(with_profile=True)
    without = _run_pair(with_profile=False)
    print(f"\nVGA PointCloud2 ({with_profile['cloud']}), {N_FRAMES} frames at {RATE_HZ:.0f} Hz, "
          f"reliable writer -> best-effort reader in another process:\n"
          f"  with profile:    {with_profile['received']}/{N_FRAMES} received, hop p50 {with_profile['hop_ms_p50']} ms\n"
          f"  Fast DDS default: {without['received']}/{N_FRAMES} received, hop p50 {without['hop_ms_p50']} ms")
    assert with_profile["received"] >= 0.95 * N_FRAMES, with_profile


if __name__ == "__main__":
    role, count, arg = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sys.exit(_publisher(count, arg) if role == "pub" else _subscriber(count, arg))
