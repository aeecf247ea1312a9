"""Open the transport a node was configured with."""

from __future__ import annotations

import structlog

from msightd.bus import Bus
from msightd.bus.connection import RedisSettings
from msightd.bus.pubsub import RedisPubSubBus
from msightd.bus.streams import RedisStreamBus


def open_bus(
    settings: RedisSettings,
    transport: str,
    log: structlog.typing.FilteringBoundLogger,
    node_name: str | None = None,
    maxlen: int | None = None,
) -> Bus:
    """``node_name`` is required by the ``stream`` transport: it names both the node's consumer group and
    its consumer, which must survive restarts so unacknowledged entries come back to the same node."""
    if transport == "pubsub":
        return RedisPubSubBus(settings, log)
    if transport == "stream":
        if not node_name:
            raise ValueError("the stream transport needs the node's name (its consumer group and consumer name)")
        if maxlen is None:
            return RedisStreamBus(settings, log, consumer_group=node_name, consumer_name=node_name)
        return RedisStreamBus(settings, log, consumer_group=node_name, consumer_name=node_name, maxlen=maxlen)
    raise ValueError(f"unknown transport {transport!r}")
