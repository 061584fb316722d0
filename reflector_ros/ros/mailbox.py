"""The node's latest-frame-wins hand-off between the executor and its worker thread.

No ROS here: the subscription callback puts each message in, the worker takes the newest
one. A message not yet taken when the next arrives is replaced (and counted as dropped by
the caller), so latency never builds up behind a slow model, and the executor thread never
runs inference.
"""
from __future__ import annotations

import threading
from typing import Any, Callable


class LatestFrame:
    """A one-slot mailbox served by one daemon thread that calls ``handle(msg)`` for each
    message it takes, one at a time. ``handle`` must not raise (the caller catches what a
    frame can throw); ``close`` lets a message in progress finish."""

    def __init__(self, handle: Callable[[Any], None], name: str) -> None:
        self._handle = handle
        self._slot: Any = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, msg: Any) -> bool:
        """Leave ``msg`` for the worker; True when it replaced one the worker had not taken."""
        with self._lock:
            replaced = self._slot is not None
            self._slot = msg
        self._ready.set()
        return replaced

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._ready.wait(0.1):
                continue
            with self._lock:
                msg, self._slot = self._slot, None
                self._ready.clear()
            if msg is not None:
                self._handle(msg)

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking messages; wait up to ``timeout`` s for the one in progress."""
        self._stop.set()
        self._ready.set()
        self._thread.join(timeout=timeout)
