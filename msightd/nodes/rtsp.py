"""RTSP source node: read a camera (or a local video file) with OpenCV and publish frames.

Cameras drop, stall and come back; this node never exits because of that. Opening and reading have
timeouts (OpenCV's FFmpeg defaults take ~90 s to notice a stalled stream) and a lost camera is retried
with capped exponential backoff, each attempt logged, each outage reported with its duration when it
ends. A local file is played at its native frame rate (``--loop`` to repeat it), so a pipeline can run
without a camera.

While the broker is unreachable, frames wait in a bounded in-memory backlog (oldest dropped first, and
counted) and are published in order when it is back.

Frame encodings (``frame_encoding``): ``jpeg`` is MSight's and works across hosts; ``raw`` sends BGR
pixels through the broker (no codec, but 3.7 MB per 1280x960 frame); ``shm`` keeps the pixels in a
shared-memory ring on this host and sends only a reference, the cheapest way to same-host msightd
consumers (see :mod:`msightd.media.frame_ring`). A frame the ring cannot take goes inline as JPEG.
``packets`` decodes nothing: it publishes the camera's own H.264/H.265 access units (see
:mod:`msightd.media.packets`) for an aggregator to store as they are (passthrough recording), read by
msightd's own RTSP client (:mod:`msightd.media.rtsp_capture`) unless the camera needs FFmpeg's. With
``record_dir`` the node stores them itself instead and publishes one notice per segment
(:mod:`msightd.nodes.camera_recorder`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from msightd.backoff import Backoff
from msightd.bus import BusUnavailable
from msightd.identity import FrameIdGenerator, worker_id_for
from msightd.logs import redact_url
from msightd.media.capture import Capture, CaptureSettings, DecodedFrame, OpenCvCapture, open_capture
from msightd.media.frame_ring import FrameRingWriter, RingError
from msightd.media.i420 import i420_bytes
from msightd.media.packets import AccessUnit, PacketCapture, TeeCapture, TeedUnit, keyframe_picture
from msightd.media.rtsp_capture import RtspPacketCapture
from msightd.media.rtsp_session import RtspUnsupported
from msightd.media.thumbnail import ThumbnailWriter
from msightd.messages import FrameMessage, FrameRef, PacketMessage, SegmentStoredMessage
from msightd.nodes.camera_recorder import CameraRecorder
from msightd.nodes.keyframe_wait import KeyframeWait
from msightd.nodes.options import RtspSourceOptions
from msightd.nodes.runtime import LogThrottle, NodeRuntime, PeriodicSummary
from msightd.protocol import EXIT_CONFIG, EXIT_OK, thumbnail_demand_path, thumbnail_path

#: What reads the source: a decoder, or a reader of the camera's packets (FFmpeg's or msightd's own).
Source = Capture | PacketCapture | RtspPacketCapture | TeeCapture
#: What the node publishes: frames, packets, or (recording itself) notices of stored segments.
Outgoing = FrameMessage | PacketMessage | SegmentStoredMessage

#: Frames further apart than this mark a camera outage (cameras run at >= 1 fps).
GAP_THRESHOLD_S = 2.0


def _naive_iso(timestamp: float) -> str:
    """MSight's per-frame log line writes UTC without a zone (``2026-01-24T11:28:45.649586``); kept for
    scripts that parse it."""
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


class RtspSourceNode:
    def __init__(self, config: RtspSourceOptions, runtime: NodeRuntime) -> None:
        config.validate()
        self._config = config
        self._runtime = runtime
        self._log = runtime.log.bind(sensor=config.sensor_name)
        self._metrics = runtime.metrics
        self._sensor = runtime.metrics.sensor(config.sensor_name)
        self._ids = FrameIdGenerator(worker_id_for(config.name, runtime.worker_id))
        self._backlog: deque[tuple[str, Outgoing]] = deque()  # (topic, message)
        self._packet_sequence = 0  # packets since the source was (re)opened
        self._packets_published = 0  # to packet_topic
        self._unreadable_seen = 0
        self._parameters_log = LogThrottle()
        self._keyframe_wait = KeyframeWait(self._log)
        self._backlog_dropped = 0
        self._publish_backoff = Backoff(0.1, 2.0)
        self._publish_retry_at = 0.0
        self._summary = PeriodicSummary(runtime)
        self._last_frame_at: float | None = None
        self._source_lost = False
        self._frames_published = 0
        self._frames_recorded = 0  # with record_dir: frames put in segments by this node
        self._ring: FrameRingWriter | None = None
        if config.frame_encoding == "shm":
            timeout_s = config.shm_consumer_timeout_s
            self._ring = FrameRingWriter(
                config.shm_dir, config.publish_topic, config.sensor_name, config.shm_slots, timeout_s
            )
        self._ring_broken = False
        self._recorder: CameraRecorder | None = None
        if config.record_dir:
            topic = config.packet_destination
            self._recorder = CameraRecorder(config, runtime, lambda notice: self._publish(notice, topic))
        self._said_rescales = False
        self._reads_rtsp_itself = config.reads_rtsp_itself  # until the camera needs FFmpeg's reader
        self._inline_log = LogThrottle()
        self._thumbnail: ThumbnailWriter | None = None
        if runtime.thumbnail_dir:
            self._thumbnail = ThumbnailWriter(
                thumbnail_path(runtime.thumbnail_dir, config.sensor_name),
                self._log,
                demand=thumbnail_demand_path(runtime.thumbnail_dir),
            )

    # -- capture ---------------------------------------------------------------------------------

    def _capture_settings(self) -> CaptureSettings:
        config = self._config
        url = config.file_path if config.is_file else config.url
        return CaptureSettings(
            url, config.is_file, config.rtsp_transport, config.open_timeout_s, config.read_timeout_s,
            config.decode_threads,
        )  # fmt: skip

    def _open_packets(self, settings: CaptureSettings) -> PacketCapture | RtspPacketCapture:
        """The camera's packets, read by msightd's own RTSP client where it can, else by FFmpeg's demuxer
        (from then on, for this node's life: the camera will not change what it needs)."""
        if self._reads_rtsp_itself:
            try:
                return RtspPacketCapture(settings, camera_clock=self._config.capture_clock == "camera")
            except RtspUnsupported as exc:
                self._reads_rtsp_itself = False
                arrival = ", and capture times are arrival times" if self._config.capture_clock == "camera" else ""
                self._log.warning(
                    "rtsp_reader_fallback", reason=str(exc),
                    msg=f"this camera is read by FFmpeg's RTSP demuxer (more CPU per frame{arrival}); "
                    "rtsp_reader = 'ffmpeg' says so up front",
                )  # fmt: skip
        return PacketCapture(settings)

    def _connect(self) -> Source | None:
        """Open the source, retrying with backoff until it works or the node is stopped."""
        backoff = Backoff(self._config.reconnect_delay_s, self._config.reconnect_delay_max_s)
        settings = self._capture_settings()
        attempt = 0
        while not self._runtime.stop.is_set():
            self._runtime.heartbeat()
            attempt += 1
            packets = self._config.frame_encoding == "packets"
            try:
                if packets or self._config.packet_topic:
                    capture: Source = (
                        TeeCapture(settings) if self._config.packet_topic else self._open_packets(settings)
                    )
                    self._packet_sequence = 0
                    self._keyframe_wait.restart()
                else:
                    capture = open_capture(self._config.decoder, settings)
            except OSError as exc:
                error = str(exc)  # capture's errors carry the URL redacted
            else:
                self._log.info("source_opened", url=redact_url(self._config.url), attempt=attempt)
                if isinstance(capture, OpenCvCapture) and not self._said_rescales:
                    self._said_rescales = True
                    self._log.warning(
                        "decoder_keeps_first_size",
                        msg="the opencv decoder rescales every frame to the camera's first picture size: a camera "
                        "that changes resolution is recorded stretched; decoder = pyav follows the change",
                    )
                self._runtime.mark_ready()
                return capture
            delay = backoff.next_delay()
            self._metrics.rtsp_reconnects.labels(self._metrics.node, self._sensor).inc()
            self._log.warning(
                "source_open_failed",
                url=redact_url(self._config.url),
                attempt=attempt,
                retry_in_s=delay,
                error=error,
                hint="check the camera URL, network and credentials; retrying",
            )
            self._runtime.stop.wait(delay)
        return None

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> int:
        if self._config.is_file and not os.path.isfile(self._config.file_path):
            self._log.error(
                "source_missing",
                msg=f"video file {self._config.file_path!r} does not exist; give an rtsp:// URL or a file path",
            )
            return EXIT_CONFIG
        if self._recorder is not None:
            self._recorder.start()
        try:
            while not self._runtime.stop.is_set():
                capture = self._connect()
                if capture is None:
                    break
                try:
                    finished = self._read_until_lost(capture)
                finally:
                    capture.close()
                if finished:
                    break
        finally:
            if self._recorder is not None:
                self._recorder.close()  # its last notice joins the backlog
            self._flush_backlog(final=True)
            if self._ring is not None:
                self._ring.close(remove_if_unheld=True)
            if self._thumbnail is not None:
                self._thumbnail.remove()
        extra = {"packets_published": self._packets_published} if self._config.packet_topic else {}
        if self._recorder is not None:
            extra = {"frames_recorded": self._frames_recorded}
        self._log.info("source_stopped", frames_published=self._frames_published, **extra)
        return EXIT_OK

    def _read_until_lost(self, capture: Source) -> bool:
        """Read and publish until the source is lost (False) or finished / stopped (True)."""
        config = self._config
        file_fps = capture.frame_rate() if config.is_file else 0.0
        if self._recorder is not None:
            self._recorder.frame_rate_hint(capture.frame_rate())
        frame_interval_s = 1.0 / file_fps if file_fps > 0 else 0.0
        next_due = time.monotonic()
        while not self._runtime.stop.is_set():
            self._runtime.heartbeat()
            if self._recorder is not None:
                self._recorder.tick()
            picture = capture.read()
            if picture is None:
                if config.is_file and config.loop:
                    capture.rewind()
                    picture = capture.read()
                if picture is None:
                    if config.is_file:
                        self._log.info("source_finished", file=config.file_path)
                        return True
                    reason = (
                        {"error": capture.lost_reason, **capture.damage()}
                        if isinstance(capture, RtspPacketCapture)
                        else {}
                    )
                    self._log.warning(
                        "source_lost", url=redact_url(self._config.url), hint="camera stopped sending", **reason
                    )
                    self._source_lost = True
                    if self._recorder is not None:
                        self._recorder.source_lost()
                    return False
            if frame_interval_s:
                next_due += frame_interval_s
                delay = next_due - time.monotonic()
                if delay > 0:
                    self._runtime.stop.wait(delay)
                else:
                    next_due = time.monotonic()  # fell behind (slow disk?): don't burst to catch up
            now = time.time()
            if isinstance(capture, PacketCapture | RtspPacketCapture | TeeCapture):
                self._report_bad_parameter_sets(capture)
            if isinstance(capture, RtspPacketCapture) and capture.clock is not None:
                for note in capture.clock.take_notes():
                    (self._log.warning if note.warning else self._log.info)("capture_clock", **note.fields)
            if isinstance(picture, TeedUnit):
                self._handle_packet(picture.unit, now, self._config.packet_topic, count=False)
                for decoded in picture.pictures:
                    self._handle_frame(decoded, now)
            elif isinstance(picture, AccessUnit):
                self._handle_packet(picture, now, self._config.publish_topic)
            else:
                self._handle_frame(picture, now)
        return True

    def _report_bad_parameter_sets(self, capture: PacketCapture | RtspPacketCapture | TeeCapture) -> None:
        """A parameter set the capture could not read (the packets still go out as sent, with the last good
        picture size): counted, and logged at most every 10 s."""
        parameters = capture.parameters
        unreadable = parameters.unreadable
        if unreadable > self._unreadable_seen:
            self._unreadable_seen = unreadable
            if self._parameters_log.allow():
                self._log.warning(
                    "parameter_sets_unreadable", count=unreadable, error=parameters.last_error,
                    hint="the camera sent an SPS/PPS this recorder cannot parse; its bytes are recorded as sent",
                )  # fmt: skip

    def _handle_packet(self, unit: AccessUnit, captured_at: float, topic: str, count: bool = True) -> None:
        """Publish a compressed frame as the camera sent it to ``topic`` (``frame_encoding = "packets"``, or
        ``packet_topic`` beside decoded frames; ``count``: whether it counts as a frame read). After each
        (re)connection, frames before the first keyframe are not published: nothing could decode them."""
        metrics = self._metrics
        if count:
            metrics.frames_read.labels(metrics.node, self._sensor).inc()
        if self._packet_sequence == 0:
            if not unit.keyframe:
                metrics.frames_dropped.labels(metrics.node, self._sensor, "before_keyframe").inc()
                self._keyframe_wait.skipped()
                return
            self._keyframe_wait.arrived()
        if count:
            self._note_gap(captured_at)
        message = unit.to_message(
            self._config.sensor_name, self._runtime.device_name, self._ids.next_id(), captured_at, self._packet_sequence
        )
        self._packet_sequence += 1
        if count and unit.keyframe and self._thumbnail is not None and self._thumbnail.due(now := time.monotonic()):
            picture = keyframe_picture(unit)  # the web page's thumbnail: one keyframe decoded every few seconds
            if picture is not None:
                self._thumbnail.write(picture.bgr(), now)
        self._log_captured(
            lambda: f"{unit.codec} {'keyframe' if unit.keyframe else 'frame'} of {unit.width}x{unit.height}",
            captured_at,
            message.frame_id,
        )
        if self._recorder is not None:
            self._frames_recorded += self._recorder.add(message)
            self._runtime.progress()
        else:
            self._publish(message, topic)
        if count:
            metrics.mark_frame(self._sensor)
        self._summary.maybe_log(frames_published=self._frames_published, backlog=len(self._backlog))

    def _handle_frame(self, picture: DecodedFrame, captured_at: float) -> None:
        metrics = self._metrics
        metrics.frames_read.labels(metrics.node, self._sensor).inc()
        self._note_gap(captured_at)
        ratio = self._config.resize_ratio
        if ratio != 1.0:
            picture = DecodedFrame(bgr=cv2.resize(picture.bgr(), None, fx=ratio, fy=ratio))
        message = self._to_message(picture, captured_at)
        if self._thumbnail is not None and self._thumbnail.due(now := time.monotonic()):
            self._thumbnail.write(picture.bgr(), now)
        self._log_captured(lambda: f"the image shape is {picture.shape}", captured_at, message.frame_id)
        self._publish(message, self._config.publish_topic)
        metrics.mark_frame(self._sensor)
        self._summary.maybe_log(frames_published=self._frames_published, backlog=len(self._backlog))

    def _log_captured(self, describe: Callable[[], str], captured_at: float, frame_id: int) -> None:
        """MSight's per-frame line, built only when shown."""
        log = self._runtime.log
        if log.is_enabled_for(self._runtime.frame_log_level):
            log.log(
                self._runtime.frame_log_level,
                "frame_captured",
                msg=f"Got image from {self._config.sensor_name}, {describe()}, time: {_naive_iso(captured_at)}",
                frame_id=frame_id,
            )

    def _note_gap(self, captured_at: float) -> None:
        """Report an outage when frames resume after a loss (or after an unusually long silence)."""
        last = self._last_frame_at
        self._last_frame_at = captured_at
        gap_s = captured_at - last if last is not None else 0.0
        was_lost, self._source_lost = self._source_lost, False
        if last is not None and (was_lost or gap_s > GAP_THRESHOLD_S):
            self._metrics.source_gaps.labels(self._metrics.node, self._sensor).inc()
            self._metrics.source_gap_seconds.labels(self._metrics.node, self._sensor).inc(gap_s)
            self._log.warning("source_gap", gap_seconds=round(gap_s, 3), msg=f"no frames for {gap_s:.1f} s")

    def _to_message(self, picture: DecodedFrame, captured_at: float) -> FrameMessage:
        shape = picture.shape
        height, width = shape[:2]
        channels = shape[2] if len(shape) == 3 else 1
        ref = self._write_ring(picture) if self._ring is not None else None
        if ref is not None:
            payload, encoded = b"", False
        elif self._config.frame_encoding == "raw":
            image = picture.bgr()
            payload = np.ascontiguousarray(image).tobytes()
            encoded = False
        else:
            ok, jpeg = cv2.imencode(".jpg", picture.bgr(), [cv2.IMWRITE_JPEG_QUALITY, self._config.jpeg_quality])
            if not ok:
                raise RuntimeError("OpenCV failed to JPEG-encode a frame")
            payload = jpeg.tobytes()
            encoded = True
        return FrameMessage(
            sensor_name=self._config.sensor_name,
            capture_timestamp=captured_at,
            creation_timestamp=time.time(),
            frame_id=self._ids.next_id(),
            device_name=self._runtime.device_name,
            image=payload,
            size=(height, width, channels),
            is_encoded=encoded,
            shm=ref,
        )

    def _write_ring(self, picture: DecodedFrame) -> FrameRef | None:
        """Put the frame in the shared-memory ring; None (counted, logged) when it must go inline instead:
        a consumer still holds the slot, or the ring cannot be had at all."""
        ring = self._ring
        assert ring is not None
        ref = None
        colour = len(picture.shape) == 3
        if not self._ring_broken and colour:
            try:
                ref = ring.write(picture)
            except RingError as exc:
                self._ring_broken = True  # for good: retrying would fail the same way every frame
                self._log.error("frame_ring_unusable", error=str(exc), msg="frames go inline as JPEG from now on")
        for path in ring.opened:
            self._log_ring_opened(path, picture.shape)
        ring.opened.clear()
        for consumer in ring.evicted:
            self._log.warning(
                "frame_ring_consumer_evicted",
                consumer_id=f"{consumer:016x}",
                msg=f"a consumer silent for {self._config.shm_consumer_timeout_s:g} s no longer holds frames",
            )
        ring.evicted.clear()
        if ref is not None:
            return ref
        reason = "ring_unusable" if self._ring_broken or not colour else "consumer_behind"
        self._metrics.frames_inline.labels(self._metrics.node, self._sensor, reason).inc()
        if self._inline_log.allow():
            self._log.warning(
                "frame_sent_inline",
                reason=reason,
                ring=str(ring.path),
                hint="a consumer is behind or stopped (it gets these frames as JPEG, nothing is lost); "
                "if this persists, raise shm_slots",
            )
        return None

    def _log_ring_opened(self, path: Path, shape: tuple[int, ...]) -> None:
        slots = self._config.shm_slots
        self._log.info(
            "frame_ring_opened",
            ring=str(path),
            slots=slots,
            size_mb=round(i420_bytes(shape[0], shape[1]) * slots / 1e6),
            msg="frames go through shared memory; consumers need this host and the same shm_dir",
        )

    # -- publishing ------------------------------------------------------------------------------

    def _publish(self, message: Outgoing, topic: str) -> None:
        self._backlog.append((topic, message))
        limit = self._config.backlog_frames
        while len(self._backlog) > max(limit, 1):
            self._backlog.popleft()
            self._backlog_dropped += 1
            self._metrics.frames_dropped.labels(self._metrics.node, self._sensor, "broker_backlog_full").inc()
        if time.monotonic() >= self._publish_retry_at:
            self._flush_backlog(final=False)

    def _flush_backlog(self, final: bool) -> None:
        """Publish the backlog in order; on failure keep it and wait a backoff delay before retrying,
        so a dead broker costs one failed attempt per delay, not one per frame."""
        metrics = self._metrics
        while self._backlog:
            topic, message = self._backlog[0]
            try:
                self._runtime.bus.publish(topic, message.to_wire())
            except BusUnavailable as exc:
                metrics.publish_errors.labels(metrics.node, topic).inc()
                self._publish_retry_at = time.monotonic() + self._publish_backoff.next_delay()
                if self._publish_backoff.attempt == 1 or final:
                    self._log.warning(
                        "publish_failed",
                        topic=topic,
                        backlog=len(self._backlog),
                        error=str(exc),
                        hint="frames are kept in memory (up to backlog_frames) until the broker is back",
                    )
                if final:
                    self._log.error("backlog_lost_on_exit", frames=len(self._backlog))
                return
            self._backlog.popleft()
            self._publish_backoff.reset()
            if isinstance(message, SegmentStoredMessage):
                continue  # a notice: not a frame
            if topic == self._config.publish_topic:
                self._frames_published += 1
            else:
                self._packets_published += 1
            metrics.frames_published.labels(metrics.node, self._sensor, topic).inc()
            self._runtime.progress()
        if self._backlog_dropped:
            self._log.warning(
                "backlog_overflowed",
                dropped_frames=self._backlog_dropped,
                msg=f"broker was unreachable; dropped {self._backlog_dropped} oldest frames",
            )
            self._backlog_dropped = 0
