"""Segment writes a directory refuses: when to retry, and one line when such an outage starts and ends.

Shared by the dumper and a camera node that records itself (``record_dir``): both keep the refused
segments in memory and retry with capped backoff, so a full, missing or read-only directory costs one
failed write per delay, not one per segment, and is said once per outage, not once per attempt.
"""

from __future__ import annotations

import errno
import time

import structlog

from msightd.backoff import Backoff

#: What to do about a write's errno, for the one line that starts an outage.
WRITE_HINTS = {
    errno.ENOSPC: "disk full: free space in the save directory, or set retain_max_size / min_free_space",
    errno.EDQUOT: "disk quota exceeded: free space or raise the quota",
    errno.EROFS: "save directory is on a read-only file system",
    errno.EACCES: "no permission to write the save directory",
    errno.ENOENT: "save directory vanished and cannot be recreated",
}


def write_hint(exc: OSError) -> str:
    return WRITE_HINTS.get(exc.errno or 0, "check the save directory")


class WriteOutage:
    """Capped-backoff retry timing plus a ``segment_writes_recovered`` line (with the outage's length)
    when writes work again. One owner thread."""

    def __init__(self, log: structlog.typing.FilteringBoundLogger) -> None:
        self._log = log
        self._backoff = Backoff(0.5, 10.0)
        self._retry_at = 0.0
        self._failing_since: float | None = None

    def due(self) -> bool:
        """Whether a write may be tried now."""
        return time.monotonic() >= self._retry_at

    def retry_now(self) -> None:
        """The next attempt goes ahead without waiting (a last one before exit)."""
        self._retry_at = 0.0

    def failed(self) -> bool:
        """A write failed: the next waits a backoff delay. True when this starts an outage (say it, once)."""
        self._retry_at = time.monotonic() + self._backoff.next_delay()
        if self._failing_since is not None:
            return False
        self._failing_since = time.monotonic()
        return True

    def recovered(self) -> None:
        """A write worked."""
        if self._failing_since is not None:
            self._log.info("segment_writes_recovered", outage_seconds=round(time.monotonic() - self._failing_since, 3))
            self._failing_since = None
        self._backoff.reset()
