"""A :class:`~msightd.bus.Bus` that carries each topic over the transport configured for it.

Topics are the unit of choice, not nodes: an aggregator may read frames from MSight's pub/sub topic and
publish segments to a durable stream. Transports are opened lazily, one per distinct setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from msightd.bus import DEFAULT_STREAM_MAXLEN, TRANSPORTS, Bus, Subscription
from msightd.bus.connection import RedisSettings
from msightd.bus.pubsub import RedisPubSubBus
from msightd.bus.streams import RedisStreamBus


@dataclass(frozen=True)
class TopicSettings:
    """How one topic travels. ``maxlen`` (stream only) bounds the entries Redis keeps for it."""

    transport: Literal["pubsub", "stream"] = "pubsub"
    maxlen: int = DEFAULT_STREAM_MAXLEN

    def validate(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}")
        if self.maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {self.maxlen}")


class TopicRouter:
    """Routes publish/subscribe per topic. Thread-safe publish (each transport's is)."""

    def __init__(
        self,
        settings: RedisSettings,
        log: structlog.typing.FilteringBoundLogger,
        node_name: str,
        topics: Mapping[str, TopicSettings],
        default: TopicSettings,
    ) -> None:
        self._settings = settings
        self._log = log
        self._node_name = node_name
        self._topics = dict(topics)
        self._default = default
        self._buses: dict[TopicSettings, Bus] = {}

    def settings_for(self, topic: str) -> TopicSettings:
        return self._topics.get(topic, self._default)

    def _bus_for(self, topic: str) -> Bus:
        key = self.settings_for(topic)
        if key.transport == "pubsub":
            key = TopicSettings()  # one pub/sub connection whatever the maxlen
        bus = self._buses.get(key)
        if bus is None:
            bus = open_bus(self._settings, key, self._log, node_name=self._node_name)
            self._buses[key] = bus
        return bus

    def publish(self, topic: str, payload: bytes) -> None:
        self._bus_for(topic).publish(topic, payload)

    def subscribe(self, topics: Sequence[str], batch_wait_s: float = 0.0) -> Subscription:
        buses = {id(self._bus_for(topic)) for topic in topics}
        if len(buses) != 1:
            raise ValueError(f"topics {list(topics)} use different transports; subscribe to them separately")
        return self._bus_for(topics[0]).subscribe(topics, batch_wait_s)

    def close(self) -> None:
        for bus in self._buses.values():
            bus.close()
        self._buses.clear()


def open_bus(
    settings: RedisSettings, topic: TopicSettings, log: structlog.typing.FilteringBoundLogger, node_name: str
) -> Bus:
    """``node_name`` names both the node's consumer group and its consumer on the ``stream`` transport: it must
    survive restarts so unacknowledged entries come back to the same node."""
    if topic.transport == "pubsub":
        return RedisPubSubBus(settings, log)
    if topic.transport == "stream":
        return RedisStreamBus(settings, log, consumer_group=node_name, consumer_name=node_name, maxlen=topic.maxlen)
    raise ValueError(f"unknown transport {topic.transport!r}")
