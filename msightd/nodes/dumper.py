"""Video local dumper node: write each segment as ``<sensor>_<YYYYmmdd_HHMMSS_ffffff>.mp4`` + ``.json``
(durably, never overwriting: :mod:`msightd.storage.writer`), index it in the save directory's catalog and
apply retention (:mod:`msightd.storage.keeper`).

A segment that cannot be written (disk full, read-only, directory gone or not mounted yet) stays in
memory, unacked, and is retried with backoff while new segments keep arriving; the node alerts with one
log line per outage and a counter. A save directory that is unusable at start is the same outage, not a
configuration error: the node runs, waits and writes as soon as it can (:mod:`msightd.storage.save_dir`).
On a full disk with retention on, the oldest segments are deleted at once to make room.

The subscribed topic may also carry notices of segments a camera node wrote itself into this directory
(``record_dir``, :mod:`msightd.nodes.camera_recorder`): those are only catalogued, after checking that the
name is a segment's and the pair is here.
"""

from __future__ import annotations

import errno
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msightd.bus import Delivery
from msightd.messages import MalformedMessage, SegmentMessage, SegmentStoredMessage, decode_segment_or_stored
from msightd.nodes.options import DumperOptions
from msightd.nodes.runtime import LogThrottle, MalformedMessageReporter, NodeRuntime, PeriodicSummary, consume
from msightd.protocol import EXIT_OK
from msightd.storage.keeper import StorageKeeper
from msightd.storage.pairs import is_segment_metadata
from msightd.storage.save_dir import SaveDirectory
from msightd.storage.write_outage import WriteOutage, write_hint
from msightd.storage.writer import SegmentWriter

#: Errors that may mean the directory itself is gone or unusable (checked again before the next write).
_DIRECTORY_ERRORS = {errno.ENOENT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.ESTALE, errno.EIO}
#: Room asked of retention beyond the segment itself (its JSON, directory entries).
_WRITE_OVERHEAD_BYTES = 256 * 1024


@dataclass
class PendingSegment:
    segment: SegmentMessage
    ack: Any


class VideoLocalDumperNode:
    def __init__(self, config: DumperOptions, runtime: NodeRuntime) -> None:
        config.validate()
        self._config = config
        self._runtime = runtime
        self._metrics = runtime.metrics
        save_dir = Path(config.save_dir).expanduser().absolute()
        self._writer = SegmentWriter(save_dir)
        self._keeper = StorageKeeper(save_dir, config.retention_policy(), runtime.log, runtime.metrics)
        self._save_dir = SaveDirectory(
            save_dir,
            config.require_mount,
            runtime.log,
            gauge=lambda usable: self._metrics.save_dir_usable.labels(self._metrics.node).set(int(usable)),
            on_usable=self._directory_ready,
            on_lost=self._keeper.close,
        )
        self._pending: deque[PendingSegment] = deque()
        self._outage = WriteOutage(runtime.log)
        self._summary = PeriodicSummary(runtime)
        self._malformed = MalformedMessageReporter(runtime)
        self._stray_notices = LogThrottle()

    def run(self) -> int:
        log = self._runtime.log
        self._save_dir.usable()  # says so, once, if it is not: the node runs anyway and keeps checking
        subscription = self._runtime.bus.subscribe([self._config.subscribe_topic])
        log.info("dumper_started", subscribe_topic=self._config.subscribe_topic, save_dir=str(self._writer.save_dir))
        try:
            consume(self._runtime, subscription, self._accept, self._tick)
        finally:
            subscription.close()
            self._outage.retry_now()
            self._write_pending()
            self._keeper.close()
            if self._pending:
                log.error(
                    "segments_unwritten_on_exit",
                    segments=len(self._pending),
                    msg=f"{len(self._pending)} segments could not be written before exit",
                )
        return EXIT_OK

    def _directory_ready(self) -> None:
        self._writer.prepare()
        self._keeper.open()

    def _directory_usable(self) -> bool:
        """The save directory's verdict; each check that finds it unusable while segments wait counts as a
        refused write of the oldest one."""
        checks_failed = self._save_dir.failed_checks
        usable = self._save_dir.usable()
        if self._save_dir.failed_checks > checks_failed and self._pending:
            sensor = self._metrics.sensor(self._pending[0].segment.sensor_name)
            self._metrics.write_errors.labels(self._metrics.node, sensor).inc()
        return usable

    def _tick(self) -> None:
        if self._directory_usable():
            self._keeper.tick()
        self._write_pending()
        self._summary.maybe_log(pending_segments=len(self._pending))

    def _accept(self, delivery: Delivery) -> None:
        try:
            segment = decode_segment_or_stored(delivery.payload)
        except MalformedMessage as error:
            self._malformed.report(delivery.topic, error)
            delivery.ack()
            return
        if isinstance(segment, SegmentStoredMessage):
            self._index_stored(segment)
            delivery.ack()
            return
        if len(self._pending) >= self._config.max_pending_segments:
            dropped = self._pending.popleft()
            sensor = self._metrics.sensor(dropped.segment.sensor_name)
            self._metrics.frames_dropped.labels(self._metrics.node, sensor, "write_backlog_full").inc(
                dropped.segment.frame_count
            )
            self._runtime.log.error("segment_dropped", sensor=dropped.segment.sensor_name, reason="write backlog full")
        self._pending.append(PendingSegment(segment, delivery.ack))
        self._metrics.pending_segments.labels(self._metrics.node).set(len(self._pending))
        self._write_pending()  # at once, unless a failed write is backing off (then the tick retries)

    def _write_pending(self) -> None:
        while self._pending and self._outage.due():
            item = self._pending[0]
            segment = item.segment
            sensor = self._metrics.sensor(segment.sensor_name)
            if not self._directory_usable():
                return
            try:
                written = self._writer.write(segment)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) and self._keeper.make_room(
                    len(segment.video) + _WRITE_OVERHEAD_BYTES
                ):
                    continue  # retention made room: try again at once
                if exc.errno in _DIRECTORY_ERRORS:
                    self._save_dir.failed()
                self._write_failed(segment, sensor, exc)
                return
            if written.bytes_written:
                self._keeper.written(written.metadata_path)  # its row follows the durable files
            self._pending.popleft()
            item.ack()
            self._outage.recovered()
            self._metrics.pending_segments.labels(self._metrics.node).set(len(self._pending))
            self._metrics.bytes_written.labels(self._metrics.node, sensor).inc(written.bytes_written)
            if written.duplicate:
                self._runtime.log.info(
                    "segment_duplicate_skipped", sensor=segment.sensor_name, file=written.video_path.name
                )
                continue
            self._metrics.segments_written.labels(self._metrics.node, sensor).inc()
            self._runtime.progress()
            latency = max(0.0, time.time() - segment.capture_timestamps[-1])
            self._metrics.capture_to_disk.labels(self._metrics.node).observe(latency)
            self._runtime.log.info(
                "segment_written",
                sensor=segment.sensor_name,
                file=written.video_path.name,
                frames=segment.frame_count,
                size_bytes=len(segment.video),
                capture_to_disk_seconds=round(latency, 3),
            )

    def _index_stored(self, notice: SegmentStoredMessage) -> None:
        """Catalogue a pair a camera node wrote into this directory. A name that is not a segment's, or a
        pair that is not here (the camera's record_dir is another directory), is refused with one line."""
        metadata_path = self._writer.save_dir / notice.file
        if not is_segment_metadata(notice.file) or not metadata_path.is_file():
            if self._stray_notices.allow(notice.sensor_name):
                self._runtime.log.error(
                    "stored_segment_not_here",
                    sensor=notice.sensor_name,
                    file=notice.file[:200],
                    save_dir=str(self._writer.save_dir),
                    msg="a camera node announced a segment that is not a segment file in this save_dir; give the "
                    "camera node's record_dir the dumper's save_dir",
                )
            return
        self._keeper.written(metadata_path)
        self._metrics.segments_indexed.labels(self._metrics.node, self._metrics.sensor(notice.sensor_name)).inc()
        self._runtime.progress()
        self._runtime.log.info(
            "segment_indexed", sensor=notice.sensor_name, file=notice.file, frames=notice.frame_count
        )

    def _write_failed(self, segment: SegmentMessage, sensor: str, exc: OSError) -> None:
        self._metrics.write_errors.labels(self._metrics.node, sensor).inc()
        if self._outage.failed():
            hint = write_hint(exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) and self._keeper.policy.enabled:
                hint = "disk full and retention found nothing more it may delete"
            self._runtime.log.error(
                "segment_write_failed",
                sensor=segment.sensor_name,
                save_dir=str(self._writer.save_dir),
                error=exc.strerror or str(exc),
                pending_segments=len(self._pending),
                msg=f"cannot write segment: {exc.strerror or exc} ({hint}); kept in memory, retrying",
            )
