"""Real segment pairs for storage tests: MP4s encoded by msightd's own encoder from the sample frames, written
by the dumper's own writer (so the JSON is exactly what a dumper writes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from msightd.media.sample import sample_frame
from msightd.media.video import EncoderSettings, SegmentEncoder
from msightd.messages import SegmentMessage
from msightd.storage.writer import SegmentWriter, WrittenSegment


def encode_frames(first_index: int, count: int, width: int = 160, height: int = 120, fps: float = 10.0) -> bytes:
    """An H.264 MP4 of sample frames ``first_index .. first_index + count - 1`` (each frame's index is
    burnt into it, so decoded frames can be told apart)."""
    encoder = SegmentEncoder(EncoderSettings(fps=fps, threads=1))
    for index in range(first_index, first_index + count):
        encoder.add(sample_frame(index, width, height))
    return encoder.finish().data


def segment_message(
    sensor: str,
    capture_timestamps: Sequence[float],
    video: bytes,
    fps: float = 10.0,
    first_frame_id: int = 1000,
    width: int = 160,
    height: int = 120,
) -> SegmentMessage:
    return SegmentMessage(
        sensor_name=sensor,
        capture_timestamp=capture_timestamps[0],
        creation_timestamp=capture_timestamps[-1] + 0.5,
        frame_id=first_frame_id,
        device_name="test-edge",
        video=video,
        frame_ids=tuple(range(first_frame_id, first_frame_id + len(capture_timestamps))),
        capture_timestamps=tuple(capture_timestamps),
        fps=fps,
        codec="h264",
        width=width,
        height=height,
    )


def write_segment(
    save_dir: Path,
    sensor: str,
    start: float,
    frame_count: int = 10,
    fps: float = 10.0,
    video: bytes | None = None,
    first_index: int = 0,
    capture_timestamps: Sequence[float] | None = None,
) -> WrittenSegment:
    """Write one pair of ``frame_count`` frames captured every 1/fps s from ``start`` (or at
    ``capture_timestamps``); ``video`` defaults to a real MP4 of sample frames from ``first_index``."""
    if capture_timestamps is None:
        capture_timestamps = [start + i / fps for i in range(frame_count)]
    stamps = list(capture_timestamps)
    data = video if video is not None else encode_frames(first_index, len(stamps), fps=fps)
    return SegmentWriter(save_dir).write(segment_message(sensor, stamps, data, fps, first_frame_id=1000 + first_index))
