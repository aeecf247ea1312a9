"""The message bus nodes talk to: publish bytes to a topic, receive deliveries from topics.

Nodes see only :class:`Bus` and :class:`Subscription`, never Redis, so a transport can be swapped per
topic (pub/sub for MSight compatibility, streams for durability) without touching a node.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

TRANSPORTS = ("pubsub", "stream")
#: Entries a stream topic keeps per node publishing there, by what it carries (the daemon's [topics] tables may
#: set a topic's total). They bound the broker's memory and how long a consumer may be away: 1000 frames of one
#: 10 fps camera is 100 s, 100-250 MB of JPEG at 1280x960 or ~50 MB of its own H.264 packets (shared-memory
#: references are tiny); 100 segments are 100-500 MB.
STREAM_MAXLEN = {"frames": 1000, "segments": 100}
#: For a topic whose payload is not known (the launch commands' --stream-maxlen).
DEFAULT_STREAM_MAXLEN = STREAM_MAXLEN["frames"]


class BusUnavailable(ConnectionError):
    """The broker cannot be reached right now; the caller decides whether to retry or buffer."""


def _no_ack() -> None:
    """Pub/sub deliveries need no acknowledgement."""


@dataclass(frozen=True)
class Delivery:
    """One message received from ``topic``. Call :attr:`ack` once it has been fully handled."""

    topic: str
    payload: bytes
    ack: Callable[[], None] = field(default=_no_ack)


def ack_all(acks: Iterable[Callable[[], None]]) -> None:
    """Call every ack; those a transport can send together (stream entries of one subscription and topic,
    which carry ``batch_key`` and ``ack_batch``) go in one round trip: a segment's hundred frames cost the
    broker one XACK instead of a hundred, and the node a hundred fewer round trips."""
    batches: dict[Hashable, list[Any]] = {}
    for ack in acks:
        key = getattr(ack, "batch_key", None)
        if key is None:
            ack()
        else:
            batches.setdefault(key, []).append(ack)
    for batch in batches.values():
        batch[0].ack_batch(batch)


class Subscription(Protocol):
    def receive(self, timeout_s: float) -> Delivery | None:
        """The next delivery, or None after ``timeout_s`` (also while the broker is away: it reconnects)."""

    def close(self) -> None: ...


class Bus(Protocol):
    def publish(self, topic: str, payload: bytes) -> None:
        """Hand ``payload`` to the broker; raise :class:`BusUnavailable` if it cannot be reached."""

    def subscribe(self, topics: Sequence[str], batch_wait_s: float = 0.0) -> Subscription:
        """Receive from ``topics``. ``batch_wait_s``: the subscriber needs no message at once, so a durable
        transport lets messages gather this long before each read (fewer, larger reads: less CPU per
        message, up to that much more latency); pub/sub, where the server pushes, ignores it."""

    def close(self) -> None: ...
