"""Redis pub/sub transport: MSight's own, fire-and-forget.

A subscriber only sees what is published while it is connected; that is the price of MSight
compatibility. The subscription reconnects by itself with capped backoff, logging each outage once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import redis
import structlog

from msightd.bus import BusUnavailable, Delivery
from msightd.bus.connection import RedisSettings
from msightd.bus.outage import BrokerOutage

_CLIENT_OPTIONS = {"socket_connect_timeout": 5.0, "health_check_interval": 10}


class RedisPubSubBus:
    """Publish and subscribe over Redis pub/sub channels named exactly as the topics. Thread-safe publish."""

    def __init__(self, settings: RedisSettings, log: structlog.typing.FilteringBoundLogger) -> None:
        self._settings = settings
        self._log = log
        self._client = settings.client(socket_timeout=10.0, **_CLIENT_OPTIONS)

    def publish(self, topic: str, payload: bytes) -> None:
        try:
            self._client.publish(topic, payload)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BusUnavailable(f"cannot publish to {topic!r} on {self._settings.describe()}: {exc}") from exc

    def subscribe(self, topics: Sequence[str], batch_wait_s: float = 0.0) -> PubSubSubscription:
        return PubSubSubscription(self._settings, list(topics), self._log)

    def close(self) -> None:
        self._client.close()


class PubSubSubscription:
    """Receives from pub/sub channels; survives broker restarts by resubscribing."""

    def __init__(self, settings: RedisSettings, topics: list[str], log: structlog.typing.FilteringBoundLogger) -> None:
        self._settings = settings
        self._topics = topics
        self._log = log
        self._client = settings.client(**_CLIENT_OPTIONS)
        self._pubsub: redis.client.PubSub | None = None
        self._outage = BrokerOutage(settings, topics, log)

    def _ensure_subscribed(self) -> redis.client.PubSub:
        if self._pubsub is None:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(*self._topics)
            self._pubsub = pubsub
        return self._pubsub

    def receive(self, timeout_s: float) -> Delivery | None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._outage.wait_to_retry(deadline - time.monotonic()):
                return None
            remaining = deadline - time.monotonic()
            try:
                message = self._ensure_subscribed().get_message(timeout=max(0.0, remaining))
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._broker_lost(exc)
                return None
            self._broker_back()
            if message is not None and message.get("type") == "message":
                channel = message["channel"]
                topic = channel.decode("utf-8", "replace") if isinstance(channel, bytes) else str(channel)
                return Delivery(topic=topic, payload=message["data"])
            if time.monotonic() >= deadline:
                return None

    def _broker_lost(self, exc: BaseException) -> None:
        if self._pubsub is not None:
            # closing a dead connection may raise anything; it is gone either way
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None
        self._outage.lost(exc)

    def _broker_back(self) -> None:
        self._outage.back()

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self._client.close()
