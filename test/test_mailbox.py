"""The node's latest-frame-wins hand-off (ros/mailbox.py), with real threads and no ROS."""
from __future__ import annotations

import threading
import time

from reflector_ros.ros.mailbox import LatestFrame


def test_the_latest_message_wins_while_the_worker_is_busy() -> None:
    """While the worker is on message 0, messages 1..3 arrive: only 3 is handled next, and
    put() says which arrivals replaced one not yet taken."""
    handled: list[int] = []
    started, release = threading.Event(), threading.Event()

    def handle(msg: int) -> None:
        handled.append(msg)
        if msg == 0:
            started.set()
            assert release.wait(5)

    box = LatestFrame(handle, "test_worker")
    try:
        assert box.put(0) is False
        assert started.wait(5)                      # the worker holds 0; the slot is empty again
        assert [box.put(m) for m in (1, 2, 3)] == [False, True, True]
        release.set()
        end = time.monotonic() + 5
        while handled != [0, 3] and time.monotonic() < end:
            time.sleep(0.01)
        assert handled == [0, 3]
    finally:
        box.close()


def test_close_lets_the_message_in_progress_finish() -> None:
    done: list[int] = []

    def handle(msg: int) -> None:
        time.sleep(0.2)
        done.append(msg)

    box = LatestFrame(handle, "test_worker")
    box.put(7)
    time.sleep(0.05)                                # the worker has taken it
    box.close(timeout=5)
    assert done == [7]
    box.put(8)                                      # after close nothing more is handled
    time.sleep(0.3)
    assert done == [7]
