"""Redis Streams transport: durable, at-least-once delivery through consumer groups.

Each topic is a stream; each entry holds one binary field, ``d``, with the payload. Publishing is
``XADD topic MAXLEN ~ maxlen * d <payload>``: the stream keeps roughly the last ``maxlen`` entries,
whether or not they were acknowledged, so ``maxlen`` bounds the broker's memory and also how long a
consumer may be away without losing entries.

A subscription reads through a consumer group (one group per consuming node, named after it) as a
stable consumer name, so Redis remembers both where the group stopped and which entries this consumer
received but never acknowledged (its pending list). :attr:`Delivery.ack` sends ``XACK``; until then the
entry stays pending and comes back to the next subscription with the same consumer name: delivery is
at least once, never exactly once, and consumers must tolerate duplicates (the dumper recognises a
redelivered segment by its content).

Group start id: a group is created at ``0`` (the stream's beginning), never at ``$``. Once a group
exists, Redis keeps its position, so a restarted consumer resumes exactly where the group stopped
either way; the start id only matters when the group is created. Creating at ``$`` would silently
skip whatever was published before the group existed, which, after a broker restart without
persistence, is whatever the producers published between the restart and this consumer's next read.
Creating at ``0`` loses nothing; the price is that a brand-new consumer node first processes the
retained history (at most ``maxlen`` entries) of a stream that already existed.

Entries every group has acknowledged are trimmed by the subscribers (see :mod:`msightd.bus.trim`), so the
broker holds what is in flight, not ``maxlen`` entries nobody needs.

Needs Redis >= 6.2 (``XAUTOCLAIM``, ``XTRIM MINID``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from msightd.bus import BusUnavailable, Delivery
from msightd.bus.acks import BROKER_ERRORS, AckTracker, EntryAck, is_error
from msightd.bus.connection import RedisSettings
from msightd.bus.outage import BrokerOutage
from msightd.bus.trim import DEFAULT_TRIM_INTERVAL_S, StreamTrimmer

PAYLOAD_FIELD = b"d"
DEFAULT_CLAIM_IDLE_MS = 60_000
#: Where a new group starts reading; see the module docstring for why it is the stream's beginning.
GROUP_START_ID = "0"

_READ_COUNT = 10
_CLAIM_COUNT = 10
#: Longest single XREADGROUP BLOCK; the read socket timeout must stay above it.
_MAX_BLOCK_MS = 1_000
_READ_SOCKET_TIMEOUT_S = _MAX_BLOCK_MS / 1000 + 2.0

Log = structlog.typing.FilteringBoundLogger
Entry = tuple[bytes, Mapping[bytes, bytes]]


class StreamBusError(RuntimeError):
    """A stream cannot be used at all (the key holds another type, no permission): not an outage."""


def _no_retries() -> Retry:
    """The transport owns retrying (with backoff and one log line per outage), not redis-py."""
    return Retry(NoBackoff(), 0)


class RedisStreamBus:
    """Publish to and subscribe from Redis streams named exactly as the topics. Thread-safe publish.

    ``consumer_group`` names the group every subscription of this bus reads through and
    ``consumer_name`` the consumer inside it; both must be stable across restarts (the node's name),
    or unacknowledged entries are left to another name's pending list (see ``claim_idle_ms``).
    ``maxlen`` is the approximate number of entries each stream retains. ``claim_idle_ms``: when a
    subscription starts, entries pending for another consumer of the group for longer than this are
    taken over, so a renamed or replaced consumer's work is not orphaned.
    """

    def __init__(
        self,
        settings: RedisSettings,
        log: Log,
        consumer_group: str,
        consumer_name: str,
        maxlen: int,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        trim_interval_s: float = DEFAULT_TRIM_INTERVAL_S,
    ) -> None:
        if not consumer_group or not consumer_name:
            raise ValueError("consumer_group and consumer_name must not be empty")
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        if claim_idle_ms < 0:
            raise ValueError(f"claim_idle_ms must be >= 0, got {claim_idle_ms}")
        self._settings = settings
        self._log = log
        self._group = consumer_group
        self._consumer = consumer_name
        self._maxlen = maxlen
        self._claim_idle_ms = claim_idle_ms
        self._trim_interval_s = trim_interval_s
        self._client = settings.client(socket_timeout=10.0, socket_connect_timeout=5.0, health_check_interval=10)
        self._publisher = StreamPublisher(self._client)
        # Acks come from any thread and must not queue behind a blocked XREADGROUP: own pool, no retries.
        self._ack_client = settings.client(
            socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=10, retry=_no_retries()
        )

    def publish(self, topic: str, payload: bytes) -> None:
        try:
            self._publisher.xadd(topic, payload, self._maxlen)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BusUnavailable(f"cannot publish to {topic!r} on {self._settings.describe()}: {exc}") from exc

    def subscribe(self, topics: Sequence[str], batch_wait_s: float = 0.0) -> StreamSubscription:
        acks = AckTracker(self._ack_client, self._group, self._settings, self._log)
        return StreamSubscription(
            self._settings,
            list(topics),
            self._log,
            group=self._group,
            consumer=self._consumer,
            acks=acks,
            claim_idle_ms=self._claim_idle_ms,
            batch_wait_s=batch_wait_s,
            trim_interval_s=self._trim_interval_s,
        )

    def close(self) -> None:
        self._publisher.close()
        self._client.close()
        self._ack_client.close()


class StreamPublisher:
    """``XADD topic MAXLEN ~ maxlen * d payload`` over one connection of its own, one caller at a time.

    redis-py's generic command path (pool checkout with its liveness poll, retry wrapper, observability
    hooks, reply callbacks) costs more CPU than the XADD it sends: ~75 us against ~45 us here, measured,
    and several times that with the caches cold between two frames. A camera node publishes every frame,
    so frames take this path. A connection found dead when sending (the broker restarted since the last
    frame) is replaced once at once, as redis-py would; any other failure surfaces as from redis-py (the
    connection drops itself and the next call reconnects): the callers own retrying. Not retried after
    the command went out, so a reply lost in a timeout never becomes a duplicate entry.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._lock = threading.Lock()
        self._connection: Any = None

    def xadd(self, topic: str, payload: bytes, maxlen: int) -> None:
        with self._lock:
            if self._connection is None:
                self._connection = self._pool.make_connection()
            self._drop_if_hung_up(self._connection)
            command = ("XADD", topic, "MAXLEN", "~", maxlen, "*", PAYLOAD_FIELD, payload)
            try:
                self._connection.send_command(*command)
            except redis.ConnectionError:
                self._connection.send_command(*command)  # disconnected by the failure: this reconnects
            self._connection.read_response()

    @staticmethod
    def _drop_if_hung_up(connection: Any) -> None:
        """A broker that restarted since the last frame has closed this socket: readable (EOF) with nothing
        asked. Disconnecting now lets the send reconnect, instead of the reply failing after the send."""
        try:
            hung_up = connection.can_read()
        except redis.ConnectionError:
            hung_up = True
        if hung_up:
            connection.disconnect()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.disconnect()
                self._connection = None


class StreamSubscription:
    """Receives from streams through a consumer group; survives broker restarts.

    Each (re)connection first makes sure the groups exist (recreating them if the broker lost them),
    takes over long-idle entries of other consumers of the group, then re-reads this consumer's own
    pending list (entries received but never acknowledged, e.g. before a crash) before reading new
    entries. Entries still buffered when the subscription is closed stay pending in Redis.

    ``batch_wait_s``: after a read that did not fill a batch (the stream trickles: one frame per read at
    10 fps), wait this long before the next one, so entries gather in Redis and arrive several per
    round trip. Each XREADGROUP costs both sides ~0.1 ms of CPU, more with cold caches between frames.
    """

    def __init__(
        self,
        settings: RedisSettings,
        topics: list[str],
        log: Log,
        *,
        group: str,
        consumer: str,
        acks: AckTracker,
        claim_idle_ms: int,
        batch_wait_s: float = 0.0,
        trim_interval_s: float = DEFAULT_TRIM_INTERVAL_S,
    ) -> None:
        if not topics:
            raise ValueError("subscribe to at least one topic")
        if batch_wait_s < 0:
            raise ValueError(f"batch_wait_s must be >= 0, got {batch_wait_s}")
        self._settings = settings
        self._topics = topics
        self._topic_by_key = {topic.encode(): topic for topic in topics}
        self._log = log
        self._group = group
        self._consumer = consumer
        self._acks = acks
        self._claim_idle_ms = claim_idle_ms
        self._client = settings.client(
            socket_timeout=_READ_SOCKET_TIMEOUT_S,
            socket_connect_timeout=5.0,
            health_check_interval=10,
            retry=_no_retries(),
        )
        self._batch_wait_s = batch_wait_s
        self._batch_full = True  # did the last read fill a batch? (then read again at once)
        self._buffer: deque[Delivery] = deque()
        self._known_groups: set[str] = set()
        self._synced = False
        self._replay: dict[str, bytes] = {}
        self._replayed = 0
        self._outage = BrokerOutage(settings, self._topics, log)
        self._trimmer = StreamTrimmer(self._client, log, trim_interval_s)

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, timeout_s: float) -> Delivery | None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if not self._outage.wait_to_retry(deadline - time.monotonic()):
                return None
            try:
                self._fill(deadline - time.monotonic())
            except BROKER_ERRORS as exc:
                self._broker_lost(exc)
                return None
            self._broker_back()
            if not self._buffer and time.monotonic() >= deadline:
                return None

    def _fill(self, remaining_s: float) -> None:
        """Buffer the next entries: the pending list first after a (re)connection, then new ones."""
        try:
            if not self._synced:
                self._sync()
            self._acks.retry_parked()
            self._trimmer.trim(self._acks.take_acked_topics())
            if self._replay:
                self._read_pending()
            else:
                self._read_new(remaining_s)
        except redis.ResponseError as exc:
            if not is_error(exc, "NOGROUP"):
                raise StreamBusError(f"cannot read {self._topics} on {self._settings.describe()}: {exc}") from exc
            self._synced = False  # the stream or its group vanished under us: recreate on the next pass

    def _sync(self) -> None:
        self._ensure_groups()
        for topic in self._topics:
            self._claim_orphans(topic)
        self._replay = dict.fromkeys(self._topics, b"0")
        self._replayed = 0
        self._synced = True

    def _ensure_groups(self) -> None:
        for topic in self._topics:
            try:
                self._client.xgroup_create(topic, self._group, id=GROUP_START_ID, mkstream=True)
            except redis.ResponseError as exc:
                if not is_error(exc, "BUSYGROUP"):
                    raise StreamBusError(f"cannot create consumer group on stream {topic!r}: {exc}") from exc
            else:
                self._log_group_created(topic)
            self._known_groups.add(topic)

    def _log_group_created(self, topic: str) -> None:
        if topic in self._known_groups:
            self._log.warning(
                "bus_group_recreated",
                broker=self._settings.describe(),
                topic=topic,
                group=self._group,
                hint="the broker lost the stream (restarted without persistence?); reading it from its start",
            )
        else:
            self._log.info("bus_group_created", topic=topic, group=self._group, start_id=GROUP_START_ID)

    def _claim_orphans(self, topic: str) -> None:
        """Take over entries another consumer of the group left pending for longer than ``claim_idle_ms``."""
        if not self._others_have_pending(topic):
            return
        cursor: Any = "0-0"
        claimed = 0
        while True:
            reply = self._client.xautoclaim(
                topic, self._group, self._consumer, self._claim_idle_ms, start_id=cursor, count=_CLAIM_COUNT
            )
            cursor, entries = reply[0], reply[1]
            claimed += len(entries)
            if cursor in (b"0-0", "0-0"):
                break
        if claimed:
            self._log.info("bus_entries_claimed", topic=topic, group=self._group, entries=claimed)

    def _others_have_pending(self, topic: str) -> bool:
        summary = self._client.xpending(topic, self._group)
        consumers = summary.get("consumers") or []
        mine = self._consumer.encode()
        return any(_as_bytes(c.get("name")) != mine and int(c.get("pending", 0)) > 0 for c in consumers)

    def _read_pending(self) -> None:
        """One page of this consumer's pending list (no BLOCK: Redis answers from memory at once)."""
        streams = dict(self._replay)
        reply = self._client.xreadgroup(self._group, self._consumer, streams, count=_READ_COUNT)  # type: ignore[arg-type]
        by_topic = self._entries_by_topic(reply)
        for topic in streams:
            entries = by_topic.get(topic, [])
            if not entries:
                del self._replay[topic]
                continue
            self._replay[topic] = entries[-1][0]
            fresh = [entry for entry in entries if not self._acks.is_outstanding(topic, entry[0])]
            self._replayed += len(fresh)
            self._accept(topic, fresh)
        if not self._replay and self._replayed:
            self._log.info("bus_pending_redelivered", topics=self._topics, entries=self._replayed)

    def _read_new(self, remaining_s: float) -> None:
        if not self._batch_full and self._batch_wait_s > 0:
            pause = min(self._batch_wait_s, max(remaining_s, 0.0))
            time.sleep(pause)
            remaining_s -= pause
        block_ms = max(1, min(_MAX_BLOCK_MS, int(remaining_s * 1000)))
        streams = dict.fromkeys(self._topics, ">")
        reply = self._client.xreadgroup(self._group, self._consumer, streams, count=_READ_COUNT, block=block_ms)  # type: ignore[arg-type]
        received = 0
        for topic, entries in self._entries_by_topic(reply).items():
            self._accept(topic, entries)
            received += len(entries)
        self._batch_full = received >= _READ_COUNT

    def _entries_by_topic(self, reply: Any) -> dict[str, list[Entry]]:
        """Normalise XREADGROUP's reply (a list of ``[stream, entries]``, or a dict under RESP3)."""
        if not reply:
            return {}
        pairs = reply.items() if isinstance(reply, Mapping) else reply
        result: dict[str, list[Entry]] = {}
        for key, entries in pairs:
            raw = _as_bytes(key)
            topic = self._topic_by_key.get(raw) or raw.decode("utf-8", "replace")
            result[topic] = [(_as_bytes(entry_id), fields or {}) for entry_id, fields in entries or []]
        return result

    def _accept(self, topic: str, entries: list[Entry]) -> None:
        """Buffer deliveries; an entry without a payload cannot be delivered and is acknowledged away."""
        unreadable = 0
        for entry_id, fields in entries:
            payload = fields.get(PAYLOAD_FIELD)
            if payload is None:
                unreadable += 1
                self._acks.ack(topic, entry_id)
                continue
            self._acks.hold(topic, entry_id)
            ack = EntryAck(self._acks, topic, entry_id)
            self._buffer.append(Delivery(topic=topic, payload=payload, ack=ack))
        if unreadable:
            self._log.warning(
                "bus_entries_unreadable",
                topic=topic,
                entries=unreadable,
                hint="trimmed by MAXLEN before they were acknowledged (raise maxlen or keep consumers running), "
                f"or written without the {PAYLOAD_FIELD.decode()!r} field by another program",
            )

    # -- outages ---------------------------------------------------------------------------------

    def _broker_lost(self, exc: BaseException) -> None:
        # dropping a dead connection may raise anything; it is gone either way
        with contextlib.suppress(Exception):
            self._client.connection_pool.disconnect()
        self._synced = False
        self._outage.lost(exc)

    def _broker_back(self) -> None:
        self._outage.back()

    def close(self) -> None:
        """Stop reading. Buffered entries stay pending in Redis; handed-out deliveries can still be acked."""
        self._buffer.clear()
        self._client.close()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()
