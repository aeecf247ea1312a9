"""The upload loop: pending pairs of one catalog go to a pool of upload threads; results come back to the
loop's thread, which alone marks, deletes and reports.

The backlog is the catalog (on disk), never memory: the loop asks for a few pending pairs at a time, so an
outage of hours costs nothing but disk. A pair is marked uploaded only after both its objects were
verified; a failure leaves it pending and the whole loop backs off (capped exponential, with jitter, so
many boxes coming back after one outage do not hammer the store in step), probing with one upload at a
time until the store answers again. One error line says what is wrong each time the problem changes, a
reminder at most every ten minutes while it lasts, and one line when uploads recover.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from msightd.backoff import Backoff
from msightd.metrics import NodeMetrics
from msightd.storage.catalog import SegmentCatalog, SegmentRecord
from msightd.storage.files import fsync_dir
from msightd.upload.s3 import StoreError
from msightd.upload.throttle import UploadCancelled
from msightd.upload.transfer import LocalSegmentError, SegmentUploader, UploadOutcome

#: How long a pair that cannot be read (but still exists) waits before it is tried again.
LOCAL_RETRY_S = 300.0
BACKLOG_REPORT_INTERVAL_S = 2.0
REMINDER_INTERVAL_S = 600.0
#: Longest wait between attempts while the store fails: a HEAD every half minute costs nothing, and a
#: store that is back is used again within that.
MAX_RETRY_DELAY_S = 30.0


def jittered(delay_s: float) -> float:
    """Between half and all of ``delay_s``: boxes that failed together do not retry together."""
    return delay_s * random.uniform(0.5, 1.0)


class UploadLoop:
    """Uploads the pending pairs of ``catalog``. :meth:`tick` and :meth:`close` must be called from one
    thread (the catalog and the files are only touched there); uploads run on ``concurrency`` threads."""

    def __init__(
        self,
        catalog: SegmentCatalog,
        uploader: SegmentUploader,
        log: Any,
        metrics: NodeMetrics,
        concurrency: int,
        delete_after_upload: bool,
        reminder: Callable[[], bool],
        backoff: Backoff | None = None,
    ) -> None:
        """``reminder()`` says whether a "still failing" line may be logged now (a log throttle's
        ``allow``, e.g. once per :data:`REMINDER_INTERVAL_S`)."""
        self._catalog = catalog
        self._uploader = uploader
        self._log = log
        self._metrics = metrics
        self._concurrency = concurrency
        self._delete = delete_after_upload
        self._directory: Path = catalog.save_dir
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload")
        self._in_flight: dict[str, Future[UploadOutcome]] = {}
        self._groups: dict[str, Hashable] = {}  # in-flight stem -> its key group (see SegmentUploader.key_group)
        self._backoff = backoff or Backoff(1.0, MAX_RETRY_DELAY_S)
        self._retry_at = 0.0
        self._failure: tuple[str, str] | None = None  # (kind, message) of the ongoing problem
        self._failing_since = 0.0
        self._reminder = reminder
        self._local_retry: dict[str, float] = {}
        self._next_backlog_report = 0.0
        self._wakeup = threading.Event()

    # -- the loop ---------------------------------------------------------------------------------

    def tick(self) -> bool:
        """Record finished uploads, start new ones; True if a pair was uploaded since the last tick."""
        uploaded = self._collect()
        self._submit()
        self._report_backlog()
        return uploaded > 0

    def close(self) -> None:
        """Wait for the uploads in flight (the stop flag makes them give up between blocks) and record
        those that finished."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._collect()
        self._report_backlog(force=True)

    def wait(self, timeout_s: float) -> None:
        """Sleep until an upload finishes or ``timeout_s`` passes (a freed slot is refilled at once)."""
        self._wakeup.wait(timeout_s)
        self._wakeup.clear()

    def _submit(self) -> None:
        now = time.monotonic()
        if now < self._retry_at:
            return
        # While the store is failing, probe with one upload at a time.
        slots = (1 if self._failure else self._concurrency) - len(self._in_flight)
        if slots <= 0:
            return
        skip = set(self._in_flight) | {stem for stem, at in self._local_retry.items() if at > now}
        busy = set(self._groups.values())
        for record in self._catalog.pending_uploads(limit=len(skip) + slots + len(busy)):
            if slots <= 0:
                break
            group = self._uploader.key_group(record)
            if record.stem in skip or group in busy:
                continue
            future = self._pool.submit(self._uploader.upload, record)
            future.add_done_callback(lambda _future: self._wakeup.set())
            self._in_flight[record.stem] = future
            self._groups[record.stem] = group
            busy.add(group)
            slots -= 1

    def _collect(self) -> int:
        uploaded = 0
        for stem, future in list(self._in_flight.items()):
            if not future.done():
                continue
            del self._in_flight[stem]
            del self._groups[stem]
            if future.cancelled():
                continue
            error = future.exception()
            if error is None:
                self._succeeded(future.result())
                uploaded += 1
            elif isinstance(error, StoreError):
                self._store_failed(error)
            elif isinstance(error, LocalSegmentError):
                self._local_failed(stem, error)
            elif not isinstance(error, UploadCancelled):
                self._metrics.uploads.labels(self._metrics.node, "failed").inc()
                self._local_retry[stem] = time.monotonic() + LOCAL_RETRY_S
                self._log.error(
                    "upload_crashed",
                    segment=stem,
                    error=f"{type(error).__name__}: {error}",
                    msg=f"uploading {stem} failed unexpectedly ({type(error).__name__}: {error}); "
                    f"trying it again in {LOCAL_RETRY_S:g} s",
                )
        return uploaded

    # -- outcomes ---------------------------------------------------------------------------------

    def _succeeded(self, outcome: UploadOutcome) -> None:
        self._catalog.mark_uploaded(outcome.stem, outcome.keys.video, time.time())
        metrics = self._metrics
        result = "already_present" if outcome.already_present else "uploaded"
        metrics.uploads.labels(metrics.node, result).inc()
        metrics.uploaded_bytes.labels(metrics.node).inc(outcome.bytes_sent)
        metrics.upload_duration.labels(metrics.node).observe(outcome.duration_s)
        self._local_retry.pop(outcome.stem, None)
        if outcome.conflict_with:
            self._log.warning(
                "upload_key_taken",
                segment=outcome.stem,
                key=outcome.conflict_with,
                used_key=outcome.keys.video,
                msg=f"{outcome.conflict_with} already holds a different segment; {outcome.stem} went to "
                f"{outcome.keys.video} instead",
            )
        self._log.info(
            "segment_uploaded",
            segment=outcome.stem,
            key=outcome.keys.video,
            size_bytes=outcome.bytes_sent,
            already_present=outcome.already_present,
            duration_seconds=round(outcome.duration_s, 3),
        )
        if self._failure is not None:
            self._log.info(
                "uploads_recovered",
                outage_seconds=round(time.monotonic() - self._failing_since, 1),
                msg=f"uploads work again after {time.monotonic() - self._failing_since:.0f} s",
            )
            self._failure = None
        self._backoff.reset()
        self._retry_at = 0.0
        if self._delete:
            self._delete_pair(outcome.stem)

    def _store_failed(self, error: StoreError) -> None:
        self._metrics.uploads.labels(self._metrics.node, "failed").inc()
        delay = jittered(self._backoff.next_delay())
        self._retry_at = time.monotonic() + delay
        problem = (error.kind, str(error))
        count, size, _oldest = self._catalog.upload_backlog()
        if problem != self._failure:
            if self._failure is None:
                self._failing_since = time.monotonic()
            self._failure = problem
            self._reminder()  # the first line is the error itself; reminders come later
            self._log.error("upload_failed", reason=error.kind, backlog_segments=count, msg=str(error))
        elif self._reminder():
            self._log.warning(
                "uploads_still_failing",
                reason=error.kind,
                failing_seconds=round(time.monotonic() - self._failing_since),
                backlog_segments=count,
                backlog_bytes=size,
                msg=f"uploads have failed for {time.monotonic() - self._failing_since:.0f} s ({error}); "
                f"{count} segments wait on disk",
            )

    def _local_failed(self, stem: str, error: LocalSegmentError) -> None:
        if error.missing:
            # Its files are gone (retention, or by hand): the files are the truth, so the row goes too.
            self._catalog.remove(stem)
            self._log.warning("segment_vanished", segment=stem, msg=f"{error}; not uploading it")
            return
        self._metrics.uploads.labels(self._metrics.node, "failed").inc()
        self._local_retry[stem] = time.monotonic() + LOCAL_RETRY_S
        self._log.error(
            "segment_unreadable",
            segment=stem,
            error=str(error),
            msg=f"{error}; other segments go on, this one is tried again in {LOCAL_RETRY_S:g} s",
        )

    def _delete_pair(self, stem: str) -> None:
        """JSON first, then the MP4 (the crash-safe order: a lone MP4 is incomplete by definition and
        swept by retention), then the row."""
        record: SegmentRecord | None = self._catalog.get(stem)
        if record is None:
            return
        try:
            (self._directory / record.metadata_file).unlink(missing_ok=True)
            fsync_dir(self._directory)
            (self._directory / record.video_file).unlink(missing_ok=True)
            fsync_dir(self._directory)
        except OSError as exc:
            self._log.error(
                "uploaded_segment_not_deleted",
                segment=stem,
                error=exc.strerror or str(exc),
                msg=f"{stem} is uploaded but could not be deleted ({exc.strerror or exc}); retention will",
            )
            return
        self._catalog.remove(stem)

    def _report_backlog(self, force: bool = False) -> None:
        now = time.monotonic()
        if now < self._next_backlog_report and not force:
            return
        self._next_backlog_report = now + BACKLOG_REPORT_INTERVAL_S
        count, size, oldest = self._catalog.upload_backlog()
        metrics = self._metrics
        metrics.upload_backlog_segments.labels(metrics.node).set(count)
        metrics.upload_backlog_bytes.labels(metrics.node).set(size)
        metrics.upload_oldest_pending_age.labels(metrics.node).set(max(0.0, time.time() - oldest) if oldest else 0.0)
