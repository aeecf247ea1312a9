"""Camera access units -> one MP4 file in memory, without decoding (stream copy).

The MP4 holds the camera's bitstream as sent: every NAL unit byte for byte. Only the framing changes,
as MP4 requires: Annex B start codes become 4-byte lengths and the parameter sets are also written to
the sample description (avcC/hvcC). So ``ffmpeg -i seg.mp4 -c copy -f framemd5 -`` gives, per packet, the
MD5 of the camera's NAL units each prefixed by its length.

Timestamps come from the camera's pts (so jitter and variable frame rates play at the right speed),
rebased so the first frame shown is at 0; decode timestamps are derived from them (the pts in order,
shifted by the reorder depth, so B-frames stay valid). Only when the pts are missing or nonsensical
(duplicates, reordered further than any encoder does) are frames spaced evenly at ``fallback_fps``.
"""

from __future__ import annotations

import io
import itertools
import statistics
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Protocol

import av

from msightd.messages import PacketMessage, SegmentMessage

#: Deepest reordering accepted from a camera's pts (x264/x265 B-pyramids reorder by 2-4 frames).
MAX_REORDER_FRAMES = 16


class AccessUnitLike(Protocol):
    """What remuxing reads from a packet (:class:`msightd.media.packets.AccessUnit` or a wire message)."""

    @property
    def data(self) -> bytes: ...
    @property
    def keyframe(self) -> bool: ...
    @property
    def pts(self) -> int | None: ...
    @property
    def duration(self) -> int: ...
    @property
    def time_base(self) -> Fraction: ...
    @property
    def codec(self) -> str: ...
    @property
    def extradata(self) -> bytes: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


def stream_key(unit: AccessUnitLike) -> Hashable:
    """Equal for access units that can share one MP4 stream (a change closes a passthrough segment)."""
    return (unit.codec, unit.extradata, unit.width, unit.height, unit.time_base)


@dataclass(frozen=True)
class Timeline:
    """Timestamps to write, in the stream's time base, in decode order."""

    pts: list[int]
    dts: list[int]
    durations: list[int]
    source: Literal["pts", "fps"]

    @property
    def frame_interval(self) -> int:
        """The typical time between frames shown (median): what the segment's frame rate is."""
        shown = sorted(self.pts)
        gaps = [b - a for a, b in itertools.pairwise(shown)]
        return round(statistics.median(gaps)) if gaps else self.durations[0]

    @property
    def span(self) -> int:
        """From the first frame shown to the end of the last one."""
        return max(p + d for p, d in zip(self.pts, self.durations, strict=True)) - min(self.pts)


def plan_timeline(
    pts: Sequence[int | None], durations: Sequence[int], time_base: Fraction, fallback_fps: float
) -> Timeline:
    """Decide every frame's pts/dts from the camera's pts (pure; see the module docstring)."""
    count = len(pts)
    step = _frame_step(pts, durations, time_base, fallback_fps)
    filled = _fill_missing(list(pts), step)
    frame_durations = [d if d > 0 else step for d in durations]
    if filled is None or not _plausible(filled):
        evenly = [index * step for index in range(count)]
        return Timeline(evenly, list(evenly), [step] * count, "fps")
    ordered = sorted(filled)
    delay = max(0, max(shown - own for shown, own in zip(ordered, filled, strict=True)))
    origin = ordered[0]
    return Timeline(
        pts=[p - origin for p in filled],
        dts=[p - origin - delay for p in ordered],
        durations=frame_durations,
        source="pts",
    )


def _frame_step(pts: Sequence[int | None], durations: Sequence[int], time_base: Fraction, fps: float) -> int:
    known = sorted(p for p in pts if p is not None)
    gaps = [b - a for a, b in itertools.pairwise(known) if b > a]
    positive = [d for d in durations if d > 0] or gaps
    if positive:
        return max(1, round(statistics.median(positive)))
    return max(1, round(1 / (Fraction(fps).limit_denominator(1001) * time_base)))


def _fill_missing(pts: list[int | None], step: int) -> list[int] | None:
    """Missing pts (RTSP leaves the first packet or two without one), first from decode-order neighbours
    ± one frame (right without B-frames); if that collides, with the segment's first frame (a keyframe:
    cameras send closed GOPs) shown one frame before the earliest known pts (right with B-frames).
    None when neither gives a plausible timeline."""
    known = [p for p in pts if p is not None]
    if not known:
        return None
    if len(known) == len(pts):
        return known
    for keyframe_first in (False, True):
        guess = list(pts)
        if keyframe_first and guess[0] is None:
            guess[0] = min(known) - step
        filled = _from_neighbours(guess, step)
        if _plausible(filled):
            return filled
    return None


def _from_neighbours(pts: list[int | None], step: int) -> list[int]:
    for index in range(len(pts) - 2, -1, -1):
        following = pts[index + 1]
        if pts[index] is None and following is not None:
            pts[index] = following - step
    for index in range(1, len(pts)):
        previous = pts[index - 1]
        if pts[index] is None and previous is not None:
            pts[index] = previous + step
    return [p for p in pts if p is not None]


def _plausible(pts: list[int]) -> bool:
    if len(set(pts)) != len(pts):
        return False
    rank = {value: index for index, value in enumerate(sorted(pts))}
    return all(abs(rank[value] - index) <= MAX_REORDER_FRAMES for index, value in enumerate(pts))


@dataclass(frozen=True)
class RemuxedVideo:
    data: bytes
    codec: str
    width: int
    height: int
    frame_count: int
    #: Frames per second from the segment's timestamps (the median interval: jitter and a GOP cut short
    #: by a stop do not skew it).
    fps: float
    timestamps_from: Literal["pts", "fps"]


def remux_mp4(units: Sequence[AccessUnitLike], fallback_fps: float) -> RemuxedVideo:
    """Store ``units`` (one segment: first a keyframe, all with the same codec, parameter sets and time
    base) in an MP4, byte for byte. Runs in a few milliseconds for 100 frames; holds one copy."""
    if not units:
        raise ValueError("a segment needs at least one access unit")
    first = units[0]
    time_base = first.time_base
    timeline = plan_timeline([u.pts for u in units], [u.duration for u in units], time_base, fallback_fps)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = _add_copy_stream(container, first)
        for unit, pts, dts, duration in zip(units, timeline.pts, timeline.dts, timeline.durations, strict=True):
            packet = av.Packet(unit.data)
            packet.stream = stream
            packet.time_base = time_base
            packet.pts, packet.dts, packet.duration = pts, dts, duration
            packet.is_keyframe = unit.keyframe
            container.mux(packet)
    fps = 1 / float(timeline.frame_interval * time_base)
    return RemuxedVideo(
        buffer.getvalue(), first.codec, first.width, first.height, len(units), round(fps, 3), timeline.source
    )


def _add_copy_stream(container: Any, first: AccessUnitLike) -> Any:
    """A stream that muxes packets as they are. PyAV cannot give a stream without a codec context its
    parameter sets, so the stream is templated on a raw-bitstream input holding only them (opening that
    reads no picture, ~0.5 ms); with no out-of-band parameter sets, the muxer takes the in-band ones."""
    if not first.extradata:
        return container.add_mux_stream(first.codec, width=first.width, height=first.height)
    with av.open(io.BytesIO(first.extradata), mode="r", format=first.codec) as template:
        stream = container.add_stream_from_template(template.streams.video[0])
    stream.codec_context.extradata = first.extradata
    stream.width, stream.height = first.width, first.height
    stream.time_base = first.time_base
    # HEVC keeps FFmpeg's default tag hev1: with hvc1 the muxer drops the in-band VPS/SPS/PPS (hvc1 means
    # "parameter sets only in the sample description"), and the file would no longer be the camera's bytes.
    return stream


def packet_segment(
    messages: Sequence[PacketMessage], fallback_fps: float, device_name: str
) -> tuple[SegmentMessage, RemuxedVideo]:
    """One passthrough segment, as the aggregator publishes it and a recording camera node stores it:
    the remuxed MP4 and every frame's id and capture time (``device_name``: when the packets carry none).
    The remux comes along for what it says about the timestamps."""
    video = remux_mp4(messages, fallback_fps)
    first = messages[0]
    # By the camera's clock a frame's time is when it was sampled, so the frames are listed in that order: the
    # order a decoder shows them in (with B-frames, not the order they are stored and arrive in).
    listed = sorted(messages, key=lambda m: m.capture_timestamp) if first.capture_clock == "camera" else messages
    return SegmentMessage(
        sensor_name=first.sensor_name,
        capture_timestamp=first.capture_timestamp,
        creation_timestamp=time.time(),
        frame_id=first.frame_id,
        device_name=first.device_name or device_name,
        video=video.data,
        frame_ids=tuple(m.frame_id for m in listed),
        capture_timestamps=tuple(m.capture_timestamp for m in listed),
        fps=video.fps,
        codec=video.codec,
        width=video.width,
        height=video.height,
        extra={"capture_clock": first.capture_clock},
    ), video
