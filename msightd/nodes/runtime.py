"""What every node is given by the process that hosts it, and the loops and throttles they share.

A node is constructed from its options dataclass and a :class:`NodeRuntime`, then ``run()`` blocks until
``runtime.stop`` is set or the node cannot go on, and returns a process exit code
(:mod:`msightd.protocol`). Nodes never read the environment, parse flags or install signal handlers: the
host does (:mod:`msightd.host`, for the launch commands and the daemon's children alike).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import structlog

from msightd.bus import Bus, Delivery, Subscription
from msightd.messages import MalformedMessage
from msightd.metrics import NodeMetrics
from msightd.stop import StopFlag

#: At most one heartbeat or progress mark per this many seconds reaches the file the daemon watches.
PULSE_INTERVAL_S = 1.0


def _nothing() -> None:
    return None


class Pulse:
    """Touches a file (its mtime is the signal) at most once per :data:`PULSE_INTERVAL_S`, and runs
    ``also`` at the same moment. Without a file (launch commands) it only runs ``also``. One owner thread:
    a pulse from a side thread would keep beating while the main loop is stuck, which is what it must show."""

    def __init__(self, path: str | None, also: Callable[[], object] = _nothing) -> None:
        self._path = path
        self._also = also
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + PULSE_INTERVAL_S
        self._also()
        if self._path is not None:
            try:
                os.utime(self._path)
            except FileNotFoundError:  # the daemon removed it (it is restarting us): recreate it
                with open(self._path, "w"):
                    pass


@dataclass
class NodeRuntime:
    """The host's services for one node. ``frame_log_level`` is the level of per-frame lines (INFO in the
    launch commands, as MSight; DEBUG under the daemon, with an INFO summary every ``summary_interval_s``)."""

    bus: Bus
    log: structlog.typing.FilteringBoundLogger
    metrics: NodeMetrics
    device_name: str
    stop: StopFlag = field(default_factory=StopFlag)
    frame_log_level: int = logging.INFO
    summary_interval_s: float = 0.0
    #: Called once the node is doing its job (subscribed / source opened); the daemon waits for it.
    mark_ready: Callable[[], None] = field(default=_nothing)
    #: Called from the node's main loop every turn (throttled): the daemon's proof the node is not hung.
    heartbeat: Callable[[], None] = field(default=_nothing)
    #: Called when work gets done (a frame published or received, a segment written; throttled).
    progress: Callable[[], None] = field(default=_nothing)
    #: Where a camera node leaves a thumbnail of its latest frame (under the daemon; None: none).
    thumbnail_dir: str | None = None
    #: Frame-id worker id assigned by the daemon (None: derived, see :func:`msightd.identity.worker_id_for`).
    worker_id: int | None = None


class PeriodicSummary:
    """Logs a ``node_summary`` line with frame rates at most every ``interval_s`` (0 disables it)."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self._runtime = runtime
        self._next = time.monotonic() + runtime.summary_interval_s

    def maybe_log(self, **fields: object) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        rates = {k: round(v, 2) for k, v in self._runtime.metrics.refresh_rates().items()}
        if self._runtime.summary_interval_s > 0:
            self._runtime.log.info("node_summary", frame_rate_hertz=rates, **fields)
        self._next = now + max(self._runtime.summary_interval_s, 1.0)


class LogThrottle:
    """At most one log line per ``interval_s`` for each key: a condition that repeats every frame (a slow
    consumer, a lost frame) must not flood the journal."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval_s = interval_s
        self._next: dict[Hashable, float] = {}

    def allow(self, key: Hashable = None) -> bool:
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            return False
        self._next[key] = now + self._interval_s
        return True


class MalformedMessageReporter:
    """Counts every unusable message; logs the first of each (topic, reason) and then at most one
    line per ``interval_s`` with how many were suppressed, so a flood cannot flood the journal."""

    def __init__(self, runtime: NodeRuntime, interval_s: float = 10.0) -> None:
        self._runtime = runtime
        self._throttle = LogThrottle(interval_s)
        self._suppressed: dict[tuple[str, str], int] = {}

    def report(self, topic: str, error: MalformedMessage) -> None:
        metrics = self._runtime.metrics
        metrics.malformed_messages.labels(metrics.node, topic, error.reason).inc()
        key = (topic, error.reason)
        if not self._throttle.allow(key):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._runtime.log.warning(
            "malformed_message",
            topic=topic,
            reason=error.reason,
            detail=error.detail,
            suppressed_since_last=self._suppressed.pop(key, 0),
            msg=f"ignored an unusable message on {topic!r} ({error.detail}); is another program publishing there?",
        )


#: How often a consuming node's housekeeping (``tick``) runs.
TICK_INTERVAL_S = 0.5


def drain(
    subscription: Subscription, handle: Callable[[Delivery], None], quiet_s: float = 0.5, limit_s: float = 10.0
) -> int:
    """After a stop request, handle what is already in flight (until ``quiet_s`` passes with nothing new),
    so a message accepted upstream just before shutdown is not lost. Returns how many were handled."""
    deadline = time.monotonic() + limit_s
    handled = 0
    while time.monotonic() < deadline:
        delivery = subscription.receive(timeout_s=quiet_s)
        if delivery is None:
            break
        handle(delivery)
        handled += 1
    return handled


def consume(
    runtime: NodeRuntime,
    subscription: Subscription,
    accept: Callable[[Delivery], None],
    tick: Callable[[], None],
    failed: threading.Event | None = None,
) -> None:
    """The consumer loop shared by nodes that subscribe: receive and ``accept`` until stopped, calling
    ``tick`` every :data:`TICK_INTERVAL_S` (housekeeping needs no call per message: at 10 frames a second
    per camera that would be most of its cost); ready once the first receive has subscribed; on a stop
    request, drain what is in flight. Ends early, without draining, if ``failed`` gets set."""
    ready = False
    next_tick = 0.0
    while not runtime.stop.is_set() and not (failed and failed.is_set()):
        runtime.heartbeat()
        delivery = subscription.receive(timeout_s=TICK_INTERVAL_S)
        if not ready:
            runtime.mark_ready()
            ready = True
        if delivery is not None:
            accept(delivery)
        now = time.monotonic()
        if now >= next_tick:
            tick()
            next_tick = now + TICK_INTERVAL_S
    if not (failed and failed.is_set()):
        drain(subscription, accept)
