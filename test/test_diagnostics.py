"""The /diagnostics status built from FrameStats (real diagnostic_msgs messages, no node):
which problem a user is told about first. The node's own path is tested over DDS in
test_node.py; image loss needs a network that drops large UDP messages, which a test on one
machine does not reliably have, so it is tested here from the counts DDS would report."""
from __future__ import annotations

import time

import numpy as np

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from reflector_ros.ros.diagnostics import FrameStats, Throttle, status_array, status_name, summary


def _status(stats: FrameStats, state: dict | None = None, **kw) -> DiagnosticStatus:
    arr = status_array(stats.snapshot(), state or {}, "/cam/image", 1.0, kw.get("waiting", False),
                       kw.get("idle", False), Time(), "/front/reflector_depth", kw.get("qos_problem"))
    return arr.status[0]


def _level(level: bytes | int) -> int:
    return int.from_bytes(level, "little") if isinstance(level, bytes) else int(level)


OK, WARN = _level(DiagnosticStatus.OK), _level(DiagnosticStatus.WARN)


def _feed(stats: FrameStats, received: int, lost_per_event: int = 0, published: bool = True) -> None:
    for _ in range(received):
        stats.arrived(False)
        if published:
            stats.processed(20.0, {})
        if lost_per_event:
            stats.lost(lost_per_event)
        time.sleep(0.002)


def test_images_lost_before_the_node_turn_the_status_warn() -> None:
    stats = FrameStats()
    _feed(stats, 20, lost_per_event=2)        # two lost for every one that arrives
    st = _status(stats)
    values = {kv.key: kv.value for kv in st.values}
    assert _level(st.level) == WARN and "67 % of the images on /cam/image are lost" in st.message
    assert "Fast DDS profile" in st.message and "input_qos reliable" in st.message
    assert values["lost_frames"] == "40" and values["received_frames"] == "20"


def test_a_few_lost_images_are_counted_but_not_a_warning() -> None:
    stats = FrameStats()
    _feed(stats, 40)
    stats.lost(1)
    st = _status(stats)
    assert _level(st.level) == OK and st.message == "ok"
    assert {kv.key: kv.value for kv in st.values}["lost_frames"] == "1"


def test_what_is_said_first() -> None:
    """Waiting for camera_info, then silence (with an incompatible publisher named), then loss,
    an empty frame_id, unknown parameters, calibration notes; idle is OK unless a subscriber
    cannot be served."""
    stats = FrameStats()
    _feed(stats, 5)
    assert "waiting for camera_info" in _status(stats, waiting=True).message
    assert "empty frame_id" in _status(stats, {"frame_id": "(empty)", "unknown_parameters": "x"}).message
    assert "unknown parameters, ignored: x" in _status(stats, {"unknown_parameters": "x", "calibration": "c"}).message
    assert _status(stats, {"calibration": "c"}).message == "calibration: c"
    idle = _status(stats, idle=True)
    assert _level(idle.level) == OK and idle.message == "idle: no subscriber on any output"
    now = time.monotonic()
    unserved = _status(stats, qos_problem={"output": ("a subscriber of /x asks for QoS …", now - 5.0)})
    assert _level(unserved.level) == WARN and "asks for QoS" in unserved.message
    later = _status(stats, qos_problem={"output": ("a subscriber of /x asks for QoS …", now - 60.0)})
    assert _level(later.level) == OK and "asks for QoS" in {kv.key: kv.value for kv in later.values}["qos_output"]
    stats.last_arrival -= 10.0                # silent for 10 s
    silent = _status(stats, qos_problem={"input": ("a publisher on /cam/image offers QoS …", now - 100.0)})
    assert silent.message.startswith("no images on /cam/image for 10 s: a publisher on /cam/image offers QoS")


def test_status_names_carry_the_namespace() -> None:
    assert status_name("/reflector_depth") == "reflector_depth: pipeline"
    assert status_name("/rear/reflector_depth") == "rear/reflector_depth: pipeline"
    st = _status(FrameStats())
    assert st.name == "front/reflector_depth: pipeline" and st.hardware_id == "/front/reflector_depth"


def test_throttle_is_by_kind_not_by_the_values_in_the_text() -> None:
    t = Throttle(period=60.0)
    assert t.admit("restart", "stamps went back 600.0 s") == "stamps went back 600.0 s"
    assert t.admit("restart", "stamps went back 5.4 s") is None
    assert t.admit("input", "stamps went back 5.4 s") is not None                    # another kind
    assert t.admit("input", "unsupported encoding 'yuv422_yuy2'") is not None       # another problem
    for text in ("unsupported encoding '8UC4'", 'unsupported encoding "nv21"', "unsupported encoding '16UC1'"):
        assert t.admit("input", text) is None                                        # the same, other values
    assert t.admit("bug", "error in <object at 0x7f3a2c10>") is not None
    assert t.admit("bug", "error in <object at 0x55d0e1f0>") is None
    t.period = 0.0
    assert t.admit("input", "unsupported encoding 'x'") == \
        "unsupported encoding 'x' (3 more of this kind since the last report)"
    assert t.admit("frame_id", "empty", once=True) == "empty"
    assert t.admit("frame_id", "empty", once=True) is None


def test_images_in_but_no_depth_out_says_why() -> None:
    """Frames arrive, none is published: the last skip reason (a TensorRT engine that failed to
    build, a bad encoding) or the backend's latest note (an engine build under way)."""
    stats = FrameStats()
    _feed(stats, 10, published=False)
    for _ in range(3):
        stats.count("skipped_bad")
    assert _status(stats).message == "ok"                 # not yet: a slow first frame is not a fault
    stats.last_output -= 20.0                             # 20 s without output
    st = _status(stats, {"last_skipped": "no TensorRT engine for network input 203x305"})
    assert _level(st.level) == WARN
    assert st.message.endswith("no depth is published; every frame is skipped: no TensorRT engine for network input 203x305")
    fresh = FrameStats()
    _feed(fresh, 10, published=False)
    fresh.last_output -= 20.0
    building = _status(fresh, {"backend_note": "TensorRT: network input 203x305 (height x width) is new: …"})
    assert _level(building.level) == WARN and building.message.endswith("is new: …")
    for _ in range(3):
        fresh.processed(20.0, {})
        time.sleep(0.01)
    assert _status(fresh, {"backend_note": "x"}).message == "ok"
    assert _status(FrameStats()).message == "ok"          # nothing arriving yet: not this warning


def test_no_output_clock_restarts_when_no_output_was_due() -> None:
    """Idle frames (no subscriber), frames waiting for camera_info and a restarted source start
    the no-output clock again, so a subscriber joining a long-idle node is not a fault."""
    for event in ("idle", "waiting_info", "restart"):
        stats = FrameStats()
        _feed(stats, 10, published=False)
        stats.last_output -= 60.0
        stats.restarted() if event == "restart" else stats.count(event)
        assert _status(stats).message == "ok", event


def test_a_restarted_source_starts_its_latency_and_stage_statistics_again() -> None:
    """A bag loop's stamps go back: the old source's latencies (now meaningless against the
    new stamps) and stage medians are dropped; the frame counts carry on."""
    stats = FrameStats()
    for ms in (900.0, 950.0, 1000.0):
        stats.arrived(False)
        stats.processed(ms, {"inference_ms": 12.0})
    snap = stats.snapshot()
    assert snap["latency_p50"] == 950.0 and snap["stages"] == {"inference_ms": 12.0}
    stats.restarted()
    snap = stats.snapshot()
    assert np.isnan(snap["latency_p50"]) and snap["stages"] == {}
    assert snap["counts"]["restarts"] == 1 and snap["counts"]["processed"] == 3
    stats.processed(20.0, {"inference_ms": 11.0})
    snap = stats.snapshot()
    assert snap["latency_p50"] == 20.0 and snap["stages"] == {"inference_ms": 11.0}
    assert summary(snap)["source_restarts"] == "1"
