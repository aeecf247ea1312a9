"""Image-to-video aggregator node: frames per sensor become MP4 segments of ``buffer_size`` frames.

Several cameras may share one frame topic, so every sensor has its own worker thread and
:class:`SegmentAssembler`. Segments are encoded *while they fill*: each frame is decoded once and fed to
the encoder(s) of the segment(s) it belongs to, so a segment is ready ~0.1 s after its last frame
(instead of seconds) and no buffer of decoded frames is held (370 MB per 100 frames at 1280x960). The
next segment starts with the last ``overlap_size`` frames of the previous one; a frame whose size
differs closes the segment early rather than producing a broken file.

The receiving loop only parses and hands frames over, so the subscription keeps draining while
segments encode (a pub/sub subscriber that falls behind is disconnected by Redis). On stop, each
sensor's partial segment is finished and published before exit. Frame deliveries are acknowledged only
once a published segment holds them; frames that came through a shared-memory ring are released to its
writer at the same moment, so a crash before then finds them still there when they are redelivered.

Compressed camera packets (a camera node with ``frame_encoding = "packets"`` or a ``packet_topic``) take
their own path, :mod:`msightd.nodes.packet_segments`: remuxed, not decoded, in whole-GOP segments.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np

from msightd.backoff import Backoff
from msightd.bus import BusUnavailable, Delivery, ack_all
from msightd.media.frame_ring import FrameLost, FrameRingReader
from msightd.media.video import EncoderSettings, I420Frame, SegmentEncoder
from msightd.messages import FrameMessage, MalformedMessage, PacketMessage, SegmentMessage, decode_frame_or_packet
from msightd.nodes.options import SENSOR_QUEUE_FRAMES, AggregatorOptions
from msightd.nodes.packet_segments import PacketSegments
from msightd.nodes.runtime import LogThrottle, MalformedMessageReporter, NodeRuntime, PeriodicSummary, consume
from msightd.protocol import EXIT_FAILURE, EXIT_OK

Item = TypeVar("Item")
#: How long a stopping aggregator keeps trying to publish its last segments to an absent broker.
STOP_PUBLISH_PATIENCE_S = 3.0


def _nothing() -> None:
    return None


def _encoder_settings(options: AggregatorOptions) -> EncoderSettings:
    return EncoderSettings(options.codec, options.fps, options.crf, options.preset, options.encoder_threads)


@dataclass(frozen=True)
class BufferedFrame:
    """A received frame, how to acknowledge it, and (for a frame from a shared-memory ring) how to tell
    the ring's writer its slot is free; both happen once a published segment holds the frame."""

    message: FrameMessage
    ack: Callable[[], None]
    release: Callable[[], None] = _nothing


@dataclass(frozen=True)
class Pixels:
    """A frame's pixels as the encoder takes them: BGR from a JPEG or raw message, or an I420 picture
    filled straight from a frame ring."""

    bgr: np.ndarray | None = None
    i420: I420Frame | None = None

    def feed(self, encoder: SegmentEncoder) -> None:
        if self.i420 is not None:
            encoder.add_i420(self.i420)
        else:
            assert self.bgr is not None
            encoder.add(self.bgr)


class OpenSegment:
    """A segment being filled: its encoder (None in pure-logic tests) and the frames it holds, in order."""

    def __init__(self, encoder: SegmentEncoder | None = None) -> None:
        self.encoder = encoder
        self.frames: list[BufferedFrame] = []
        self.last_sequence = -1

    def add(self, frame: BufferedFrame, pixels: Pixels | None, sequence: int) -> None:
        if self.encoder is not None and pixels is not None:
            pixels.feed(self.encoder)
        # keep what the segment message needs, not the JPEG (24 MB per 100 frames at 1280x960)
        self.frames.append(dataclasses.replace(frame, message=dataclasses.replace(frame.message, image=b"")))
        self.last_sequence = sequence

    def abort(self) -> None:
        if self.encoder is not None:
            self.encoder.abort()


@dataclass
class SegmentAssembler:
    """Which segments one sensor's frames go into, decided as each frame arrives (so segments encode
    while they fill). Segment k holds frames ``k*step .. k*step + buffer_size - 1`` with
    ``step = buffer_size - overlap_size``: consecutive segments share ``overlap_size`` frames. A frame of a
    different size closes the open segment early (a shorter, valid file) and starts afresh.
    Pure logic apart from what ``new_segment`` creates; one owner thread.
    """

    buffer_size: int
    overlap_size: int
    new_segment: Callable[[], OpenSegment]
    open: list[OpenSegment] = field(default_factory=list)
    size: tuple[int, int, int] | None = None
    position: int = 0  # frames since the current run of same-size frames began
    sequence: int = 0  # frames seen, for telling fresh frames from overlap already published
    emitted_upto: int = -1  # sequence of the last frame of the last emitted segment

    def add(self, frame: BufferedFrame, pixels: Pixels | None) -> list[OpenSegment]:
        """Add ``frame`` to every segment it belongs to; return the segments it completes."""
        completed: list[OpenSegment] = []
        if self.size is not None and frame.message.size != self.size:
            completed += self.flush()
        self.size = frame.message.size
        if self.position % (self.buffer_size - self.overlap_size) == 0:
            self.open.append(self.new_segment())
        for segment in self.open:
            segment.add(frame, pixels, self.sequence)
        self.sequence += 1
        self.position += 1
        if len(self.open[0].frames) >= self.buffer_size:
            completed.append(self._emit(self.open.pop(0)))
        return completed

    def flush(self) -> list[OpenSegment]:
        """End of input (stop, or a size change): the oldest open segment if it holds a frame not yet
        published (it contains every frame the younger ones do); the others are dropped."""
        oldest, rest = (self.open[0], self.open[1:]) if self.open else (None, [])
        self.open, self.position, self.size = [], 0, None
        for segment in rest:
            segment.abort()
        if oldest is None:
            return []
        if oldest.last_sequence <= self.emitted_upto:
            oldest.abort()
            return []
        return [self._emit(oldest)]

    def _emit(self, segment: OpenSegment) -> OpenSegment:
        self.emitted_upto = segment.last_sequence
        return segment


def _decode_image(message: FrameMessage) -> np.ndarray:
    """The BGR pixels of an inline (JPEG or raw) frame."""
    if not message.is_encoded:
        return np.frombuffer(message.image, dtype=np.uint8).reshape(message.size)
    image = cv2.imdecode(np.frombuffer(message.image, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MalformedMessage("bad_field", f"frame {message.frame_id} holds an undecodable JPEG")
    return image


class SensorWorker:
    """Decodes and encodes one sensor's frames on its own thread, in arrival order, so the receiving
    loop never waits for a codec and sensors encode side by side on the cores."""

    def __init__(self, node: ImageToVideoAggregatorNode, sensor_name: str) -> None:
        self._node = node
        self.sensor_name = sensor_name
        # Bounded (5 s at 10 fps, ~12 MB of JPEG at 1280x960): when encoding falls behind, the receiving
        # loop waits (backpressure) instead of buffering without limit; with the stream transport the
        # frames wait in Redis meanwhile.
        self.queue: queue.Queue[BufferedFrame | None] = queue.Queue(maxsize=SENSOR_QUEUE_FRAMES)
        config = node.config
        self._assembler = SegmentAssembler(
            config.buffer_size, config.overlap_size, lambda: OpenSegment(SegmentEncoder(_encoder_settings(config)))
        )
        self._thread = threading.Thread(target=self._run, name=f"encoder-{sensor_name[:20]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (frame := self.queue.get()) is not None:
                pixels = self._node.decode(frame)
                if pixels is not None:
                    for segment in self._assembler.add(frame, pixels):
                        self._node.publish_segment(segment)
            for segment in self._assembler.flush():
                self._node.publish_segment(segment)
        except Exception:
            self._node.runtime.log.exception("segment_encode_failed", sensor=self.sensor_name)
            self._node.encoder_failed.set()
        finally:
            for segment in self._assembler.open:
                segment.abort()

    def stop(self) -> None:
        """Finish: the partial segment is encoded and published before this returns."""
        self.queue.put(None)
        self._thread.join()


class ImageToVideoAggregatorNode:
    def __init__(self, config: AggregatorOptions, runtime: NodeRuntime) -> None:
        config.validate()
        self.config = config
        self.runtime = runtime
        self._metrics = runtime.metrics
        self._workers: dict[str, SensorWorker] = {}
        self.encoder_failed = threading.Event()
        self._behind_log = LogThrottle()
        self._summary = PeriodicSummary(runtime)
        self._malformed = MalformedMessageReporter(runtime)
        self._rings = FrameRingReader(config.shm_dir, consumer=config.name)
        self._lost_log = LogThrottle()
        self._packets = PacketSegments(self)

    def run(self) -> int:
        topic = self.config.subscribe_topic
        subscription = self.runtime.bus.subscribe([topic], batch_wait_s=self.config.batch_wait_s)
        self.runtime.log.info(
            "aggregator_started",
            subscribe_topic=topic,
            publish_topic=self.config.publish_topic,
            buffer_size=self.config.buffer_size,
            overlap_size=self.config.overlap_size,
            codec=self.config.codec,
        )
        try:
            consume(self.runtime, subscription, self._accept, self._tick, failed=self.encoder_failed)
        finally:
            subscription.close()
            for worker in self._workers.values():
                worker.stop()
            self._packets.stop()
            self._rings.close()
        return EXIT_FAILURE if self.encoder_failed.is_set() else EXIT_OK

    def _tick(self) -> None:
        self._rings.heartbeat()
        queued = sum(worker.queue.qsize() for worker in self._workers.values()) + self._packets.queued()
        self._metrics.pending_segments.labels(self._metrics.node).set(queued / self.config.buffer_size)
        self._summary.maybe_log(queued_frames=queued, sensors=len(self._workers) + len(self._packets))

    def _accept(self, delivery: Delivery) -> None:
        try:
            message = decode_frame_or_packet(delivery.payload)
        except MalformedMessage as error:
            self._malformed.report(delivery.topic, error)
            delivery.ack()
            return
        sensor = self._metrics.sensor(message.sensor_name)
        self._metrics.frames_received.labels(self._metrics.node, sensor, delivery.topic).inc()
        self._metrics.mark_frame(sensor)
        self.runtime.progress()
        if isinstance(message, PacketMessage):
            self._packets.accept(message, delivery.ack)
            return
        worker = self._workers.get(message.sensor_name)
        if worker is None:
            worker = self._workers[message.sensor_name] = SensorWorker(self, message.sensor_name)
        ref = message.shm
        release = _nothing if ref is None else lambda: self._rings.release(ref)
        self.hand_over(worker.queue, message.sensor_name, BufferedFrame(message, delivery.ack, release))

    def hand_over(self, sensor_queue: queue.Queue[Item | None], sensor_name: str, item: Item) -> None:
        """Queue a frame or packet for its sensor's thread, waiting while that queue is full (backpressure)."""
        while not self.encoder_failed.is_set():
            try:
                sensor_queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._behind_log.allow():
                    self.runtime.log.warning(
                        "encoding_behind",
                        sensor=sensor_name,
                        queued_frames=sensor_queue.qsize(),
                        msg="encoding cannot keep up with the cameras, receiving waits: too many cameras or too "
                        "slow a preset for this CPU?",
                    )

    # -- encoder threads -------------------------------------------------------------------------

    def decode(self, frame: BufferedFrame) -> Pixels | None:
        """The frame's pixels, or None (counted, logged, acknowledged) when they cannot be had."""
        message = frame.message
        try:
            if message.shm is not None:
                height, width = message.size[:2]
                return Pixels(i420=self._rings.read_into(message.shm, height, width, I420Frame))
            return Pixels(bgr=_decode_image(message))
        except MalformedMessage as error:
            self._malformed.report(self.config.subscribe_topic, error)
            reason = "undecodable"
        except FrameLost as lost:
            reason = f"shm_{lost.reason}"
            if self._lost_log.allow(lost.reason):
                self.runtime.log.warning(
                    "frame_lost",
                    sensor=message.sensor_name,
                    reason=lost.reason,
                    detail=str(lost),
                    hint="frames in shared memory need the camera node and this node on one host with the same shm_dir",
                )
        sensor = self._metrics.sensor(message.sensor_name)
        self._metrics.frames_dropped.labels(self._metrics.node, sensor, reason).inc()
        frame.ack()
        return None

    def publish_segment(self, segment: OpenSegment) -> None:
        assert segment.encoder is not None
        video = segment.encoder.finish()
        messages = [frame.message for frame in segment.frames]
        first = messages[0]
        sensor = self._metrics.sensor(first.sensor_name)
        encode_seconds = segment.encoder.encode_seconds
        self._metrics.encode_duration.labels(self._metrics.node).observe(encode_seconds)
        self._metrics.segment_size.labels(self._metrics.node).observe(len(video.data))
        self._metrics.segments_encoded.labels(self._metrics.node, sensor).inc()
        message = SegmentMessage(
            sensor_name=first.sensor_name,
            capture_timestamp=first.capture_timestamp,
            creation_timestamp=time.time(),
            frame_id=first.frame_id,
            device_name=first.device_name or self.runtime.device_name,
            video=video.data,
            frame_ids=tuple(m.frame_id for m in messages),
            capture_timestamps=tuple(m.capture_timestamp for m in messages),
            fps=self.config.fps,
            codec=video.codec,
            width=video.width,
            height=video.height,
        )
        if not self.publish(message):
            return  # frames stay unacked: a durable transport redelivers them
        ack_all(frame.ack for frame in segment.frames)
        for frame in segment.frames:
            frame.release()
        self.runtime.log.info(
            "segment_published",
            sensor=first.sensor_name,
            frames=message.frame_count,
            size_bytes=len(video.data),
            encode_seconds=round(encode_seconds, 3),
            first_frame_id=message.frame_id,
            cropped_to_even=video.cropped,
        )

    def publish(self, segment: SegmentMessage) -> bool:
        """Publish, retrying while the broker is away; False only if it had to give up on exit."""
        topic = self.config.publish_topic
        payload = segment.to_wire()
        backoff = Backoff(0.25, 5.0)
        metrics = self._metrics
        sensor = metrics.sensor(segment.sensor_name)
        give_up_at: float | None = None
        while True:
            try:
                self.runtime.bus.publish(topic, payload)
                metrics.segments_published.labels(metrics.node, sensor, topic).inc()
                return True
            except BusUnavailable as exc:
                metrics.publish_errors.labels(metrics.node, topic).inc()
                delay = backoff.next_delay()
                self.runtime.log.warning(
                    "segment_publish_failed",
                    sensor=segment.sensor_name,
                    topic=topic,
                    error=str(exc),
                    retry_in_s=delay,
                    hint="segment kept in memory; waiting for the broker",
                )
            if self.runtime.stop.is_set():
                # Stopping with the broker gone (e.g. the daemon and its embedded Redis died): wait a
                # little, then give up rather than outlive the pipeline. With the stream transport the
                # frames stay unacked and are redelivered after the restart, so nothing is lost there.
                give_up_at = give_up_at or time.monotonic() + STOP_PUBLISH_PATIENCE_S
                if time.monotonic() >= give_up_at:
                    self.runtime.log.error(
                        "segment_not_published_on_exit", sensor=segment.sensor_name, frames=segment.frame_count
                    )
                    return False
                delay = min(delay, 0.5)
            time.sleep(delay)
