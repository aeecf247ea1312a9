"""Open the transport a node was configured with."""

from __future__ import annotations

import structlog

from msightd.bus import Bus
from msightd.bus.connection import RedisSettings
from msightd.bus.pubsub import RedisPubSubBus


def open_bus(settings: RedisSettings, transport: str, log: structlog.typing.FilteringBoundLogger) -> Bus:
    if transport == "pubsub":
        return RedisPubSubBus(settings, log)
    raise ValueError(f"unknown transport {transport!r}")
