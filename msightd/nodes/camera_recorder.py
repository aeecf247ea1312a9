"""Passthrough recording inside the camera node (``record_dir``): the camera's own packets are cut into
whole-GOP segments (:mod:`msightd.media.gop_segmenter`, the same rule as the aggregator's), remuxed
(:mod:`msightd.media.remux`) and written durably (:class:`~msightd.storage.writer.SegmentWriter`) by the
process that reads the camera.

Why: a packet that travels camera node -> broker -> aggregator -> broker -> dumper is serialised,
copied and parsed four times, which costs several times what storing it does (README, Performance).
Here nothing crosses a process boundary but one small notice per segment
(:class:`~msightd.messages.SegmentStoredMessage`), published where the packets would have gone; the
dumper that owns the directory catalogues the pair from it, so retention, exports, uploads and the web
page work as for any other segment. Recording also goes on while the broker is down (the notices wait
in the node's publish backlog, and a dumper reconciles its catalog with the files when it opens it).

Files follow the dumper's contract: names from the first frame's capture time, MP4 before JSON, fsynced,
never overwritten. A write the directory refuses (full disk, not mounted, read-only) keeps the segment
in memory, up to :data:`PENDING_SEGMENTS`, retried with backoff; retention stays the dumper's (on a full
disk it deletes at once on its next round when ``min_free_space`` or ``retain_max_size`` is set).

Crash safety: while a segment is open, each packet is also copied into a memory-mapped spool file in
``shm_dir`` (:mod:`msightd.storage.packet_spool`); a node that dies is restarted by the daemon, stores
what the spool holds as a segment of its own, and goes on. One owner thread (the camera node's main loop).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from msightd.media.gop_segmenter import ClosedSegment, GopSegmenter
from msightd.media.remux import packet_segment, stream_key
from msightd.messages import PacketMessage, SegmentMessage, SegmentStoredMessage
from msightd.nodes.options import RtspSourceOptions
from msightd.nodes.runtime import NodeRuntime
from msightd.storage.packet_spool import PacketSpool
from msightd.storage.write_outage import WriteOutage, write_hint
from msightd.storage.writer import SegmentWriter

#: Segments kept in memory while the directory refuses writes (~25 MB at 1280x960, 100 frames each);
#: beyond that the oldest is dropped, counted and logged.
PENDING_SEGMENTS = 5
#: Frames per second for MP4 timestamps when the camera gives no usable pts and no nominal rate.
FALLBACK_FPS = 10.0


def _is_keyframe(message: PacketMessage) -> bool:
    return message.keyframe


class CameraRecorder:
    """Segments, stores and announces one camera's packets. ``announce`` publishes a notice (the node's
    backlog keeps it while the broker is away)."""

    def __init__(
        self, options: RtspSourceOptions, runtime: NodeRuntime, announce: Callable[[SegmentStoredMessage], None]
    ) -> None:
        self._runtime = runtime
        self._log = runtime.log.bind(sensor=options.sensor_name)
        self._metrics = runtime.metrics
        self._sensor = runtime.metrics.sensor(options.sensor_name)
        self._announce = announce
        self._writer = SegmentWriter(Path(options.record_dir).expanduser().absolute())
        self._segmenter: GopSegmenter[PacketMessage] = GopSegmenter(
            options.buffer_size, options.overlap_size, _is_keyframe, stream_key
        )
        self._spool = PacketSpool(
            Path(options.shm_dir), self._writer.save_dir, options.sensor_name, runtime.device_name
        )
        self._fallback_fps = FALLBACK_FPS
        self._last_sequence: int | None = None
        self._pending: deque[SegmentMessage] = deque()
        self._outage = WriteOutage(self._log)

    @property
    def save_dir(self) -> Path:
        return self._writer.save_dir

    def start(self) -> None:
        """Store what a previous run of this node left in its spool (it died with a segment open)."""
        try:
            self._writer.prepare()
            recovered = self._spool.recover()
        except OSError as exc:
            self._log.error(
                "recording_spool_unreadable",
                error=str(exc),
                msg=f"cannot read the previous run's open segment in {self.save_dir}: {exc}",
            )
            return
        if recovered:
            self._log.warning("open_segment_recovered", frames=len(recovered), msg="the previous run ended abruptly")
            for segment in self._cut(recovered):
                self._store(segment)
        self._keep_in_spool(None, restart=True)

    def frame_rate_hint(self, fps: float) -> None:
        """The source's nominal frame rate: MP4 timestamps when the pts are unusable."""
        if fps > 0:
            self._fallback_fps = fps

    def add(self, message: PacketMessage) -> bool:
        """Record one packet; False if it was skipped (waiting for a keyframe)."""
        continuous = self._last_sequence is not None and message.sequence == self._last_sequence + 1
        self._last_sequence = message.sequence
        added = self._segmenter.add(message, continuous)
        for segment in added.closed:
            self._store(segment)
        self._keep_in_spool(message if added.kept else None, restart=bool(added.closed))
        return added.kept

    def source_lost(self) -> None:
        """The camera stopped sending: the open segment ends at its last good frame, stored at once."""
        self._last_sequence = None
        for segment in self._segmenter.close("discontinuity"):
            self._store(segment)
        self._keep_in_spool(None, restart=True)

    def tick(self) -> None:
        """Retry segments the directory refused, once their backoff delay has passed."""
        if self._pending and self._outage.due():
            self._write_pending()

    def close(self) -> None:
        """Store the open segment and everything pending (one last attempt each)."""
        for segment in self._segmenter.close("end"):
            self._store(segment)
        self._outage.retry_now()
        self._write_pending()
        if self._pending:
            frames = sum(segment.frame_count for segment in self._pending)
            self._log.error(
                "segments_unwritten_on_exit",
                segments=len(self._pending),
                frames=frames,
                msg=f"{len(self._pending)} segments could not be written to {self.save_dir} before exit",
            )
        else:
            self._spool.clear()
        self._spool.close()

    # -- internals -------------------------------------------------------------------------------

    def _cut(self, messages: list[PacketMessage]) -> list[ClosedSegment[PacketMessage]]:
        """Recovered packets through a segmenter of their own (they may span a stream change)."""
        segmenter: GopSegmenter[PacketMessage] = GopSegmenter(self._segmenter.buffer_size, 0, _is_keyframe, stream_key)
        closed: list[ClosedSegment[PacketMessage]] = []
        previous: int | None = None
        for message in messages:
            closed += segmenter.add(message, previous is None or message.sequence == previous + 1).closed
            previous = message.sequence
        return closed + segmenter.close("end")

    def _keep_in_spool(self, message: PacketMessage | None, restart: bool) -> None:
        """Mirror the open segment in the spool: appended packet by packet, rewritten (its overlap) when a
        segment closed. Without a spool recording goes on, only without crash safety."""
        if self._spool.failed:
            return
        try:
            if restart:
                self._spool.restart(self._segmenter.items)
            elif message is not None:
                self._spool.append(message)
        except OSError as exc:
            self._spool.abandon()
            self._log.error(
                "recording_spool_failed",
                spool=str(self._spool.path),
                error=str(exc),
                msg=f"cannot keep the open segment in {self._spool.path} ({exc}): recording goes on, but a crash "
                "of this node loses its open segment; check shm_dir",
            )

    def _store(self, segment: ClosedSegment[PacketMessage]) -> None:
        if segment.reason != "size":
            self._log.info("segment_cut_short", reason=segment.reason, frames=len(segment.items))
        message, video = packet_segment(segment.items, self._fallback_fps, self._runtime.device_name)
        self._metrics.segment_size.labels(self._metrics.node).observe(len(video.data))
        self._metrics.segments_encoded.labels(self._metrics.node, self._sensor).inc()
        if len(self._pending) >= PENDING_SEGMENTS:
            dropped = self._pending.popleft()
            reason = "write_backlog_full"
            self._metrics.frames_dropped.labels(self._metrics.node, self._sensor, reason).inc(dropped.frame_count)
            self._log.error(
                "segment_dropped", reason=reason, frames=dropped.frame_count, first_frame_id=dropped.frame_id
            )
        self._pending.append(message)
        self._write_pending()

    def _write_pending(self) -> None:
        while self._pending and self._outage.due():
            segment = self._pending[0]
            try:
                written = self._writer.write(segment)
            except OSError as exc:
                self._write_failed(exc)
                return
            self._pending.popleft()
            self._outage.recovered()
            if written.duplicate:
                continue
            self._metrics.segments_written.labels(self._metrics.node, self._sensor).inc()
            self._metrics.bytes_written.labels(self._metrics.node, self._sensor).inc(written.bytes_written)
            latency = max(0.0, time.time() - segment.capture_timestamps[-1])
            self._metrics.capture_to_disk.labels(self._metrics.node).observe(latency)
            self._runtime.progress()
            self._log.info(
                "segment_written",
                file=written.video_path.name,
                frames=segment.frame_count,
                size_bytes=len(segment.video),
                capture_to_disk_seconds=round(latency, 3),
            )
            self._announce(
                SegmentStoredMessage(
                    sensor_name=segment.sensor_name,
                    capture_timestamp=segment.capture_timestamp,
                    creation_timestamp=time.time(),
                    frame_id=segment.frame_id,
                    device_name=segment.device_name,
                    file=written.metadata_path.name,
                    frame_count=segment.frame_count,
                    last_capture_timestamp=max(segment.capture_timestamps),
                    size_bytes=written.bytes_written,
                )
            )

    def _write_failed(self, exc: OSError) -> None:
        self._metrics.write_errors.labels(self._metrics.node, self._sensor).inc()
        if self._outage.failed():
            self._log.error(
                "segment_write_failed",
                save_dir=str(self.save_dir),
                error=exc.strerror or str(exc),
                pending_segments=len(self._pending),
                msg=f"cannot write segment: {exc.strerror or exc} ({write_hint(exc)}); kept in memory, retrying "
                "(freeing space is the dumper's retention: set its min_free_space)",
            )
