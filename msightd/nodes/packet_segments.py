"""The aggregator's passthrough path: a camera's compressed packets become MP4 segments without decoding.

A camera node with ``frame_encoding = "packets"`` publishes :class:`~msightd.messages.PacketMessage` s on
the frame topic; the aggregator hands them here. Each sensor gets a :class:`PacketSensorWorker` (its own
thread and queue, like the transcoding ``SensorWorker`` beside it) that cuts the packets into whole-GOP
segments (:mod:`msightd.media.gop_segmenter`: the rule is stated there) and stores each segment's packets
as they are in an MP4 (:mod:`msightd.media.remux`, a few milliseconds per segment). The segment message
is the same as for transcoded segments (every frame id and capture time, codec, size, ``fps`` from the
camera's pts), so the dumper, uploader and retention need nothing new.

A packet ``sequence`` that does not follow the previous one (the camera reconnected, or packets were
lost on the way) ends the segment at the last good packet. Packets are acknowledged once a published
segment holds them; those skipped while waiting for a keyframe are counted as dropped and acknowledged.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from msightd.bus import ack_all
from msightd.media.gop_segmenter import ClosedSegment, GopSegmenter
from msightd.media.remux import packet_segment, stream_key
from msightd.messages import PacketMessage

if TYPE_CHECKING:
    from msightd.nodes.aggregator import ImageToVideoAggregatorNode

#: Packets waiting per sensor between the receiving loop and the sensor's thread (remuxing is cheap:
#: this only absorbs a burst).
SENSOR_QUEUE_PACKETS = 100


@dataclass(frozen=True)
class ReceivedPacket:
    message: PacketMessage
    ack: Callable[[], None]


def _stream_key(packet: ReceivedPacket) -> Hashable:
    return stream_key(packet.message)


def _is_keyframe(packet: ReceivedPacket) -> bool:
    return packet.message.keyframe


class PacketSensorWorker:
    """Segments and remuxes one sensor's packets on its own thread, in arrival order."""

    def __init__(self, node: ImageToVideoAggregatorNode, sensor_name: str) -> None:
        self._node = node
        self.sensor_name = sensor_name
        self.queue: queue.Queue[ReceivedPacket | None] = queue.Queue(maxsize=SENSOR_QUEUE_PACKETS)
        config = node.config
        self._segmenter: GopSegmenter[ReceivedPacket] = GopSegmenter(
            config.buffer_size, config.overlap_size, _is_keyframe, _stream_key
        )
        self._last_sequence: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"remux-{sensor_name[:22]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (packet := self.queue.get()) is not None:
                self._add(packet)
            for segment in self._segmenter.close("end"):
                self._publish(segment)
        except Exception:
            self._node.runtime.log.exception("segment_remux_failed", sensor=self.sensor_name)
            self._node.encoder_failed.set()

    def _add(self, packet: ReceivedPacket) -> None:
        sequence = packet.message.sequence
        continuous = self._last_sequence is not None and sequence == self._last_sequence + 1
        self._last_sequence = sequence
        added = self._segmenter.add(packet, continuous)
        for segment in added.closed:
            if segment.reason != "size":
                self._node.runtime.log.info(
                    "segment_cut_short", sensor=self.sensor_name, reason=segment.reason, frames=len(segment.items)
                )
            self._publish(segment)
        if not added.kept:
            metrics = self._node.runtime.metrics
            metrics.frames_dropped.labels(metrics.node, metrics.sensor(self.sensor_name), "before_keyframe").inc()
            packet.ack()

    def _publish(self, segment: ClosedSegment[ReceivedPacket]) -> None:
        started = time.perf_counter()
        messages = [packet.message for packet in segment.items]
        message, video = packet_segment(messages, self._node.config.fps, self._node.runtime.device_name)
        remux_seconds = time.perf_counter() - started
        first = messages[0]
        metrics = self._node.runtime.metrics
        metrics.encode_duration.labels(metrics.node).observe(remux_seconds)
        metrics.segment_size.labels(metrics.node).observe(len(video.data))
        metrics.segments_encoded.labels(metrics.node, metrics.sensor(first.sensor_name)).inc()
        if not self._node.publish(message):
            return  # packets stay unacknowledged: a durable transport redelivers them
        ack_all(packet.ack for packet in segment.items)
        self._node.runtime.log.info(
            "segment_published",
            sensor=first.sensor_name,
            frames=message.frame_count,
            size_bytes=len(video.data),
            encode_seconds=round(remux_seconds, 4),  # the remux: same field as transcoded segments
            first_frame_id=message.frame_id,
            overlap_frames=segment.overlap,
            timestamps_from=video.timestamps_from,
        )

    def stop(self) -> None:
        """Finish: the open segment is remuxed and published before this returns."""
        self.queue.put(None)
        self._thread.join()


class PacketSegments:
    """The aggregator's packet workers, one per sensor, created on a sensor's first packet."""

    def __init__(self, node: ImageToVideoAggregatorNode) -> None:
        self._node = node
        self._workers: dict[str, PacketSensorWorker] = {}

    def accept(self, message: PacketMessage, ack: Callable[[], None]) -> None:
        worker = self._workers.get(message.sensor_name)
        if worker is None:
            worker = self._workers[message.sensor_name] = PacketSensorWorker(self._node, message.sensor_name)
        self._node.hand_over(worker.queue, worker.sensor_name, ReceivedPacket(message, ack))

    def queued(self) -> int:
        return sum(worker.queue.qsize() for worker in self._workers.values())

    def __len__(self) -> int:
        return len(self._workers)

    def stop(self) -> None:
        for worker in self._workers.values():
            worker.stop()
