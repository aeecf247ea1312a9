"""Upload bandwidth limit: one token bucket shared by every upload thread of a node.

Metered uplinks (LTE) are paid per byte and shared with the cameras' own traffic, so ``max_bandwidth`` caps
the bytes per second the uploader puts on the wire, summed over its threads. The bucket is charged for the
request body only, as it is sent (see :class:`ThrottledReader`), never for the reads botocore makes to sign
a request, so the limit is what the network sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol


class UploadCancelled(Exception):
    """The node is stopping: the upload in progress was abandoned (nothing was marked uploaded)."""


class Cancel(Protocol):
    def is_set(self) -> bool: ...


class TokenBucket:
    """At most ``rate_bytes_per_s`` on average, bursts up to ``burst_bytes``. Thread-safe.

    A caller reserves its bytes under the lock (the balance may go negative) and then sleeps, outside
    the lock, until its reservation is paid for: callers are served in order and never starve each other.
    """

    def __init__(
        self,
        rate_bytes_per_s: float,
        burst_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if rate_bytes_per_s <= 0:
            raise ValueError(f"rate must be > 0 bytes/s, got {rate_bytes_per_s}")
        self.rate_bytes_per_s = float(rate_bytes_per_s)
        # A quarter second of traffic by default: smooth on the wire, large enough for 64 KiB socket writes.
        self.burst_bytes = burst_bytes if burst_bytes is not None else max(65536, int(rate_bytes_per_s / 4))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst_bytes)
        self._updated = clock()

    def acquire(self, size: int, cancel: Cancel | None = None) -> None:
        """Wait until ``size`` bytes may be sent; raise :class:`UploadCancelled` if ``cancel`` gets set."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst_bytes), self._tokens + (now - self._updated) * self.rate_bytes_per_s)
            self._updated = now
            self._tokens -= size
            wait_s = -self._tokens / self.rate_bytes_per_s if self._tokens < 0 else 0.0
        deadline = self._clock() + wait_s
        while True:
            left = deadline - self._clock()
            if left <= 0:
                return
            if cancel is not None and cancel.is_set():
                raise UploadCancelled("upload cancelled")
            self._sleep(min(left, 0.2))


class ThrottledReader:
    """A request body that pays the bucket for each block as the HTTP client reads it to send it, and stops
    the request (:class:`UploadCancelled`) once ``cancel`` is set. ``seek``/``tell`` pass through, so a
    client can rewind it for a retry."""

    def __init__(self, raw: BinaryIO, bucket: TokenBucket | None, cancel: Cancel | None, block_bytes: int = 65536):
        self._raw = raw
        self._bucket = bucket
        self._cancel = cancel
        self._block_bytes = block_bytes

    def read(self, size: int = -1) -> bytes:
        if self._cancel is not None and self._cancel.is_set():
            raise UploadCancelled("upload cancelled")
        if size is None or size < 0 or size > self._block_bytes:
            size = self._block_bytes
        data = self._raw.read(size)
        if data and self._bucket is not None:
            self._bucket.acquire(len(data), self._cancel)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()
