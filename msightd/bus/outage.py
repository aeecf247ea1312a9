"""What a subscription does while the broker is away: back off, and say so once per outage."""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from msightd.backoff import Backoff
from msightd.bus.connection import RedisSettings


class BrokerOutage:
    """Capped-backoff retry timing plus one ``bus_disconnected`` / ``bus_reconnected`` pair per outage.

    Owned by one subscription (not thread-safe).
    """

    def __init__(
        self, settings: RedisSettings, topics: Sequence[str], log: structlog.typing.FilteringBoundLogger
    ) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._log = log
        self._backoff = Backoff(initial_s=0.25, max_s=5.0)
        self._down_since: float | None = None
        self._retry_at = 0.0

    def wait_to_retry(self, remaining_s: float) -> bool:
        """Sleep towards the next retry (at most ``remaining_s``); True once a retry is due."""
        wait_s = self._retry_at - time.monotonic()
        if wait_s <= 0:
            return True
        time.sleep(max(0.0, min(remaining_s, wait_s)))
        return time.monotonic() >= self._retry_at

    def lost(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._backoff.next_delay()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._log.warning(
                "bus_disconnected",
                broker=self._settings.describe(),
                topics=self._topics,
                error=str(exc),
                hint="is redis-server running and reachable? retrying with backoff",
            )

    def back(self) -> None:
        if self._down_since is not None:
            self._log.info(
                "bus_reconnected",
                broker=self._settings.describe(),
                down_seconds=round(time.monotonic() - self._down_since, 3),
            )
            self._down_since = None
            self._backoff.reset()
