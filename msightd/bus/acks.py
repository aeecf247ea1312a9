"""Acknowledging stream entries from any thread, with the broker away or not (see :class:`AckTracker`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import structlog

from msightd.bus.connection import RedisSettings

Log = structlog.typing.FilteringBoundLogger
#: What an unreachable or restarting broker raises (an outage, not a refusal).
BROKER_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
_ACK_RETRY_S = 1.0


def is_error(exc: redis.ResponseError, code: str) -> bool:
    """Is this reply error of kind ``code`` (``NOGROUP``, ``BUSYGROUP``, ...)?"""
    return str(exc).startswith(code)


class AckTracker:
    """Which entries a subscription has handed out and not yet acknowledged; XACKs them from any thread.

    An entry is *outstanding* from the moment it is buffered until its XACK succeeded: first *held*,
    then *parked* if the XACK failed because the broker was away. Parked acks are retried by the
    receiving thread (:meth:`retry_parked`); if the process dies first, the entries stay pending in
    Redis and are redelivered after the restart. A re-read of the pending list skips outstanding
    entries, so nothing the node still holds is delivered to it twice.
    """

    def __init__(self, client: redis.Redis, group: str, settings: RedisSettings, log: Log) -> None:
        self._client = client
        self._group = group
        self._settings = settings
        self._log = log
        self._lock = threading.Lock()
        self._held: set[tuple[str, bytes]] = set()
        self._parked: set[tuple[str, bytes]] = set()
        self._retry_at = 0.0
        self._failing = False
        self._acked_topics: set[str] = set()  # acknowledged in since the last take_acked_topics()

    def hold(self, topic: str, entry_id: bytes) -> None:
        with self._lock:
            self._held.add((topic, entry_id))

    def is_outstanding(self, topic: str, entry_id: bytes) -> bool:
        with self._lock:
            key = (topic, entry_id)
            return key in self._held or key in self._parked

    def ack(self, topic: str, entry_id: bytes) -> None:
        """Acknowledge one entry. Never raises for an unreachable broker: the ack is parked instead."""
        self.ack_many(topic, [entry_id])

    def ack_many(self, topic: str, entry_ids: Sequence[bytes]) -> None:
        """Acknowledge entries of one topic in one XACK (a segment's frames: one round trip, not a hundred).
        Never raises for an unreachable broker: the acks are parked instead."""
        with self._lock:
            skip = time.monotonic() < self._retry_at
        if skip:
            self._park(topic, entry_ids, None)
            return
        try:
            self._client.xack(topic, self._group, *entry_ids)
        except BROKER_ERRORS as exc:
            self._park(topic, entry_ids, exc)
            return
        except redis.ResponseError as exc:
            self._forget_lost(topic, entry_ids, exc)
        with self._lock:
            self._held.difference_update((topic, entry_id) for entry_id in entry_ids)
            self._acked_topics.add(topic)

    def take_acked_topics(self) -> set[str]:
        """The topics acknowledged in since the last call (what may now be trimmed)."""
        with self._lock:
            topics, self._acked_topics = self._acked_topics, set()
        return topics

    def _park(self, topic: str, entry_ids: Sequence[bytes], exc: BaseException | None) -> None:
        with self._lock:
            keys = [(topic, entry_id) for entry_id in entry_ids]
            self._parked.update(keys)
            self._held.difference_update(keys)
            if exc is None:
                return
            self._retry_at = time.monotonic() + _ACK_RETRY_S
            first_failure = not self._failing
            self._failing = True
        if first_failure:
            self._log.warning(
                "bus_ack_failed",
                broker=self._settings.describe(),
                topic=topic,
                entries=len(entry_ids),
                error=str(exc),
                hint="the entries stay pending: acked once the broker is back, or redelivered after a restart",
            )

    def _forget_lost(self, topic: str, entry_ids: Sequence[bytes], exc: redis.ResponseError) -> None:
        """XACK was refused. NOGROUP means the broker restarted empty and the pending entries went with
        the group: nothing left to ack. Anything else (ACL, wrong key type) is logged, never raised into
        the node; the entries stay pending and are redelivered after a restart."""
        if is_error(exc, "NOGROUP"):
            self._log.debug("bus_ack_dropped", topic=topic, entries=len(entry_ids), reason="consumer group gone")
            return
        self._log.error("bus_ack_rejected", topic=topic, entries=len(entry_ids), error=str(exc))

    def retry_parked(self) -> None:
        """XACK every parked entry (receiving thread). Raises the broker's connection errors."""
        with self._lock:
            if not self._parked or time.monotonic() < self._retry_at:
                return
            parked = sorted(self._parked)
        by_topic: dict[str, list[bytes]] = {}
        for topic, entry_id in parked:
            by_topic.setdefault(topic, []).append(entry_id)
        for topic, entry_ids in by_topic.items():
            try:
                self._client.xack(topic, self._group, *entry_ids)
            except redis.ResponseError as exc:
                self._forget_lost(topic, entry_ids, exc)
        with self._lock:
            self._parked.difference_update(parked)
            self._acked_topics.update(by_topic)
            self._failing = False
        self._log.info("bus_acks_flushed", entries=len(parked), broker=self._settings.describe())


@dataclass(frozen=True)
class EntryAck:
    """Acknowledges one stream entry when called; :func:`msightd.bus.ack_all` sends those of one
    subscription and topic together."""

    tracker: AckTracker
    topic: str
    entry_id: bytes

    def __call__(self) -> None:
        self.tracker.ack(self.topic, self.entry_id)

    @property
    def batch_key(self) -> tuple[int, str]:
        return id(self.tracker), self.topic

    @staticmethod
    def ack_batch(acks: Sequence[EntryAck]) -> None:
        acks[0].tracker.ack_many(acks[0].topic, [ack.entry_id for ack in acks])
