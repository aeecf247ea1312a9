"""Who is speaking: the edge device's name and Snowflake-style frame ids.

MSight tags every message with the device name and a 64-bit Snowflake id. msightd keeps both so MSight
consumers can correlate frames, but does not refuse to start without ``MSIGHT_EDGE_DEVICE_NAME`` as MSight
does: the host name is a sensible default on an edge box.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

DEVICE_NAME_ENV = "MSIGHT_EDGE_DEVICE_NAME"

#: Custom epoch (2020-01-01T00:00:00Z) in milliseconds, so 41 bits of milliseconds last until 2089.
_EPOCH_MS = 1_577_836_800_000
_WORKER_BITS = 10
_SEQUENCE_BITS = 12


def device_name(environ: Mapping[str, str] | None = None) -> str:
    """The device name from ``MSIGHT_EDGE_DEVICE_NAME``, else the host name."""
    env = os.environ if environ is None else environ
    return env.get(DEVICE_NAME_ENV) or socket.gethostname()


class FrameIdGenerator:
    """Unique, time-ordered 64-bit ids: 41 bits of milliseconds, 10 bits of worker, 12 of sequence.

    Thread-safe. ``worker_id`` separates producers that could otherwise collide within one millisecond
    (derive it from the node name and process id). Ids never go backwards, even if the clock does.
    """

    def __init__(self, worker_id: int) -> None:
        self._worker = worker_id & ((1 << _WORKER_BITS) - 1)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        with self._lock:
            now_ms = max(int(time.time() * 1000) - _EPOCH_MS, self._last_ms)
            if now_ms == self._last_ms:
                self._sequence = (self._sequence + 1) & ((1 << _SEQUENCE_BITS) - 1)
                if self._sequence == 0:  # 4096 ids in one millisecond: borrow the next millisecond
                    now_ms += 1
            else:
                self._sequence = 0
            self._last_ms = now_ms
            return (now_ms << (_WORKER_BITS + _SEQUENCE_BITS)) | (self._worker << _SEQUENCE_BITS) | self._sequence


def worker_id_for(node_name: str, assigned: int | None = None) -> int:
    """The worker id a node's frame ids carry: ``assigned`` by the daemon (distinct among its nodes), else
    derived from the node's name and process id. Derived ids are 10 bits: among 40 cameras two share one
    more often than not, and then two frames captured in the same millisecond get the same id (the likely
    cause of one id found twice in a 40-camera run), so the daemon hands out distinct ones (:class:`WorkerIds`)."""
    if assigned is not None:
        return assigned & ((1 << _WORKER_BITS) - 1)
    return (hash(node_name) ^ os.getpid()) & ((1 << _WORKER_BITS) - 1)


class WorkerIds:
    """Distinct worker ids for a daemon's nodes, by name: kept for a node across restarts and reloads (a
    restarted node's ids still only go forward: its clock has moved on), new names get the next free one.
    Unique for the first 1024 names a daemon has run."""

    def __init__(self) -> None:
        self._by_name: dict[str, int] = {}

    def __call__(self, node_name: str) -> int:
        return self._by_name.setdefault(node_name, len(self._by_name) % (1 << _WORKER_BITS))
