"""Image-to-video aggregator node: buffer frames per sensor, encode each full buffer into an MP4 segment.

Several cameras may share one frame topic, so every sensor has its own :class:`SegmentWindow`. A
segment is emitted every ``buffer_size`` frames; the next one starts with the last ``overlap_size``
frames of the previous one. A frame whose size differs from the buffer's closes the buffer early (a
shorter segment) rather than producing a broken file.

Receiving and encoding are separate threads: the receiving loop only parses and buffers, so the
subscription keeps draining while a segment encodes (a pub/sub subscriber that falls behind is
disconnected by Redis). On stop, every buffer's partial segment is encoded and published before exit.
Frame deliveries are acknowledged only once the segment holding them is published.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import cv2
import numpy as np

from msightd.backoff import Backoff
from msightd.bus import BusUnavailable, Delivery
from msightd.messages import FrameMessage, MalformedMessage, SegmentMessage, decode_frame
from msightd.nodes.base import (
    EXIT_FAILURE,
    EXIT_OK,
    ConfigError,
    MalformedMessageReporter,
    NodeRuntime,
    PeriodicSummary,
    consume,
)
from msightd.video import CODECS, X264_PRESETS, EncoderSettings, encode_segment

#: How long a stopping aggregator keeps trying to publish its last segments to an absent broker.
STOP_PUBLISH_PATIENCE_S = 3.0


@dataclass(frozen=True)
class AggregatorConfig:
    """Options of the aggregator (the ``msight_launch_image_to_video_aggregator`` flags, snake_case)."""

    name: str
    subscribe_topic: str
    publish_topic: str
    fps: float = 10.0
    buffer_size: int = 100
    overlap_size: int = 0
    codec: Literal["h264", "hevc", "mp4v"] = "h264"
    crf: int = 23
    preset: str = "veryfast"
    encoder_threads: int = 0
    encode_workers: int = 0

    def validate(self) -> None:
        if self.buffer_size < 1:
            raise ConfigError(f"buffer_size must be >= 1, got {self.buffer_size}")
        if not 0 <= self.overlap_size < self.buffer_size:
            raise ConfigError(
                f"overlap_size must be >= 0 and smaller than buffer_size ({self.buffer_size}), got {self.overlap_size}"
            )
        if not 0 < self.fps <= 240:
            raise ConfigError(f"fps must be in (0, 240], got {self.fps}")
        if self.codec not in CODECS:
            raise ConfigError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.preset not in X264_PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")
        if self.encode_workers < 0 or self.encoder_threads < 0:
            raise ConfigError("encode_workers and encoder_threads must be >= 0 (0 = automatic)")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be 0..51, got {self.crf}")

    def encoder_settings(self) -> EncoderSettings:
        # Several segments encoding side by side use the cores better than one segment with many threads
        # (x264's frame threads add latency and ~20% CPU); one worker gets the encoder's own threading.
        threads = self.encoder_threads or (1 if self.workers() > 1 else 0)
        return EncoderSettings(self.codec, self.fps, self.crf, self.preset, threads)

    def workers(self) -> int:
        """Segments encoded in parallel: ``encode_workers``, or one per CPU core."""
        return self.encode_workers or os.cpu_count() or 1


@dataclass(frozen=True)
class BufferedFrame:
    """A received frame kept (still compressed) until its segment is encoded."""

    message: FrameMessage
    ack: Callable[[], None]


@dataclass
class SegmentWindow:
    """The frames of one sensor waiting to become a segment. Pure logic, no I/O; one owner thread.

    ``fresh`` counts buffered frames not yet in any emitted segment (the rest are overlap carried over).
    """

    buffer_size: int
    overlap_size: int
    frames: list[BufferedFrame] = field(default_factory=list)
    fresh: int = 0

    def add(self, frame: BufferedFrame) -> list[list[BufferedFrame]]:
        """Buffer ``frame``; return the segments it completes (none, one, or two on a size change)."""
        completed: list[list[BufferedFrame]] = []
        if self.frames and self.frames[0].message.size != frame.message.size:
            partial = self.flush()
            if partial:
                completed.append(partial)
            self.frames = []
        self.frames.append(frame)
        self.fresh += 1
        if len(self.frames) >= self.buffer_size:
            completed.append(self.frames)
            self.frames = self.frames[len(self.frames) - self.overlap_size :] if self.overlap_size else []
            self.fresh = 0
        return completed

    def flush(self) -> list[BufferedFrame] | None:
        """The partial segment, if any frame in it is new; the window is left empty."""
        frames, fresh = self.frames, self.fresh
        self.frames, self.fresh = [], 0
        return frames if fresh else None


def _decode_image(message: FrameMessage) -> np.ndarray:
    if not message.is_encoded:
        return np.frombuffer(message.image, dtype=np.uint8).reshape(message.size)
    image = cv2.imdecode(np.frombuffer(message.image, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MalformedMessage("bad_field", f"frame {message.frame_id} holds an undecodable JPEG")
    return image


class ImageToVideoAggregatorNode:
    kind: ClassVar[str] = "image_to_video_aggregator"

    def __init__(self, config: AggregatorConfig, runtime: NodeRuntime) -> None:
        config.validate()
        self._config = config
        self._runtime = runtime
        self._metrics = runtime.metrics
        self._windows: dict[str, SegmentWindow] = {}
        self._segments: queue.Queue[list[BufferedFrame] | None] = queue.Queue()
        self._encoder_failed = threading.Event()
        self._summary = PeriodicSummary(runtime)
        self._malformed = MalformedMessageReporter(runtime)

    def run(self) -> int:
        topic = self._config.subscribe_topic
        subscription = self._runtime.bus.subscribe([topic])
        encoders = [
            threading.Thread(target=self._encode_loop, name=f"segment-encoder-{i}", daemon=True)
            for i in range(self._config.workers())
        ]
        for encoder in encoders:
            encoder.start()
        self._runtime.log.info(
            "aggregator_started",
            subscribe_topic=topic,
            publish_topic=self._config.publish_topic,
            buffer_size=self._config.buffer_size,
            overlap_size=self._config.overlap_size,
            codec=self._config.codec,
        )
        try:
            consume(self._runtime, subscription, self._accept, self._tick, failed=self._encoder_failed)
        finally:
            subscription.close()
            for window in self._windows.values():
                partial = window.flush()
                if partial:
                    self._enqueue(partial)
            for _ in encoders:
                self._segments.put(None)
            for encoder in encoders:
                encoder.join()
        return EXIT_FAILURE if self._encoder_failed.is_set() else EXIT_OK

    def _tick(self) -> None:
        self._summary.maybe_log(pending_segments=self._segments.qsize(), sensors=len(self._windows))

    def _accept(self, delivery: Delivery) -> None:
        try:
            message = decode_frame(delivery.payload)
        except MalformedMessage as error:
            self._malformed.report(delivery.topic, error)
            delivery.ack()
            return
        sensor = self._metrics.sensor(message.sensor_name)
        self._metrics.frames_received.labels(self._metrics.node, sensor, delivery.topic).inc()
        self._metrics.mark_frame(sensor)
        window = self._windows.get(message.sensor_name)
        if window is None:
            window = SegmentWindow(self._config.buffer_size, self._config.overlap_size)
            self._windows[message.sensor_name] = window
        for frames in window.add(BufferedFrame(message, delivery.ack)):
            self._enqueue(frames)

    def _enqueue(self, frames: list[BufferedFrame]) -> None:
        self._segments.put(frames)
        self._metrics.pending_segments.labels(self._metrics.node).set(self._segments.qsize())

    # -- encoder thread --------------------------------------------------------------------------

    def _encode_loop(self) -> None:
        while True:
            frames = self._segments.get()
            if frames is None:
                return
            try:
                self._encode_and_publish(frames)
            except Exception:
                self._runtime.log.exception("segment_encode_failed", frames=len(frames))
                self._encoder_failed.set()
                return
            finally:
                self._metrics.pending_segments.labels(self._metrics.node).set(self._segments.qsize())

    def _encode_and_publish(self, frames: list[BufferedFrame]) -> None:
        first = frames[0].message
        sensor = self._metrics.sensor(first.sensor_name)
        log = self._runtime.log.bind(sensor=first.sensor_name)
        images: list[np.ndarray] = []
        kept: list[BufferedFrame] = []
        for frame in frames:
            try:
                images.append(_decode_image(frame.message))
                kept.append(frame)
            except MalformedMessage as error:
                self._malformed.report(self._config.subscribe_topic, error)
                self._metrics.frames_dropped.labels(self._metrics.node, sensor, "undecodable").inc()
        if not images:
            return
        started = time.perf_counter()
        video = encode_segment(images, self._config.encoder_settings())
        encode_seconds = time.perf_counter() - started
        self._metrics.encode_duration.labels(self._metrics.node).observe(encode_seconds)
        self._metrics.segment_size.labels(self._metrics.node).observe(len(video.data))
        self._metrics.segments_encoded.labels(self._metrics.node, sensor).inc()
        messages = [frame.message for frame in kept]
        segment = SegmentMessage(
            sensor_name=first.sensor_name,
            capture_timestamp=messages[0].capture_timestamp,
            creation_timestamp=time.time(),
            frame_id=messages[0].frame_id,
            device_name=messages[0].device_name or self._runtime.device_name,
            video=video.data,
            frame_ids=tuple(m.frame_id for m in messages),
            capture_timestamps=tuple(m.capture_timestamp for m in messages),
            fps=self._config.fps,
            codec=video.codec,
            width=video.width,
            height=video.height,
        )
        if not self._publish(segment):
            return  # frames stay unacked: a durable transport redelivers them
        for frame in frames:
            frame.ack()
        log.info(
            "segment_published",
            frames=segment.frame_count,
            size_bytes=len(video.data),
            encode_seconds=round(encode_seconds, 3),
            first_frame_id=segment.frame_id,
            cropped_to_even=video.cropped,
        )

    def _publish(self, segment: SegmentMessage) -> bool:
        """Publish, retrying while the broker is away; False only if it had to give up on exit."""
        topic = self._config.publish_topic
        payload = segment.to_wire()
        backoff = Backoff(0.25, 5.0)
        metrics = self._metrics
        sensor = metrics.sensor(segment.sensor_name)
        give_up_at: float | None = None
        while True:
            try:
                self._runtime.bus.publish(topic, payload)
                metrics.segments_published.labels(metrics.node, sensor, topic).inc()
                return True
            except BusUnavailable as exc:
                metrics.publish_errors.labels(metrics.node, topic).inc()
                delay = backoff.next_delay()
                self._runtime.log.warning(
                    "segment_publish_failed",
                    sensor=segment.sensor_name,
                    topic=topic,
                    error=str(exc),
                    retry_in_s=delay,
                    hint="segment kept in memory; waiting for the broker",
                )
            if self._runtime.stop.is_set():
                # Stopping with the broker gone (e.g. the daemon and its embedded Redis died): wait a
                # little, then give up rather than outlive the pipeline. With the stream transport the
                # frames stay unacked and are redelivered after the restart, so nothing is lost there.
                give_up_at = give_up_at or time.monotonic() + STOP_PUBLISH_PATIENCE_S
                if time.monotonic() >= give_up_at:
                    self._runtime.log.error(
                        "segment_not_published_on_exit", sensor=segment.sensor_name, frames=segment.frame_count
                    )
                    return False
                delay = min(delay, 0.5)
            time.sleep(delay)
