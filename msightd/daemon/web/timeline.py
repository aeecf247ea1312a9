"""Recorded spans and gaps of one sensor, from its segments' capture times (pure logic).

A segment covers ``[first_capture, last_capture + 1/fps)``: its last frame stands for one frame period.
Two segments belong to one span when the next one starts within ``GAP_FRAME_PERIODS`` frame periods of
the previous one's last frame; anything longer is a gap. This works on segment rows (cheap enough for a
day of 10-second segments on every page load); a camera outage *inside* a segment (the aggregator keeps
filling a segment across an outage) shows as a segment whose capture times span more than its frames
need, which :func:`segment_has_gap` tells.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

#: No frame for longer than this many frame periods is a gap.
GAP_FRAME_PERIODS = 3.0


class SegmentTimes(Protocol):
    """What the timeline needs of a segment (the catalog's ``SegmentRecord`` has it)."""

    @property
    def first_capture_timestamp(self) -> float: ...
    @property
    def last_capture_timestamp(self) -> float: ...
    @property
    def frame_count(self) -> int: ...
    @property
    def fps(self) -> float: ...


@dataclass(frozen=True)
class Span:
    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def as_json(self) -> dict[str, float]:
        return {"start": round(self.start, 6), "end": round(self.end, 6), "duration_s": round(self.duration_s, 3)}


def _period(segment: SegmentTimes) -> float:
    return 1.0 / segment.fps if segment.fps > 0 else 0.0


def segment_has_gap(segment: SegmentTimes, gap_periods: float = GAP_FRAME_PERIODS) -> bool:
    """True when the segment's frames span longer than they could without a gap inside."""
    period = _period(segment)
    if period == 0 or segment.frame_count < 2:
        return False
    needed = (segment.frame_count - 1) * period
    return segment.last_capture_timestamp - segment.first_capture_timestamp > needed + gap_periods * period


def recorded_spans(segments: Iterable[SegmentTimes], gap_periods: float = GAP_FRAME_PERIODS) -> list[Span]:
    """Merge segments (any order) into spans of continuous recording, oldest first."""
    spans: list[Span] = []
    last_frame = 0.0
    tolerance = 0.0
    for segment in sorted(segments, key=lambda s: s.first_capture_timestamp):
        period = _period(segment)
        end = segment.last_capture_timestamp + period
        if spans and segment.first_capture_timestamp - last_frame <= max(tolerance, gap_periods * period):
            if end > spans[-1].end:
                spans[-1] = Span(spans[-1].start, end)
        else:
            spans.append(Span(segment.first_capture_timestamp, end))
        if segment.last_capture_timestamp >= last_frame:
            last_frame = segment.last_capture_timestamp
            tolerance = gap_periods * period
    return spans


def gaps_between(spans: list[Span], start: float, end: float, min_gap_s: float = 0.0) -> list[Span]:
    """The holes between consecutive spans, plus the one from the last span to ``end`` (an outage that is
    still going on), clipped to ``[start, end)``. Time before the first span is not a gap: nothing was
    recorded yet. ``min_gap_s`` drops the trailing hole while a segment is still being filled."""
    gaps = [Span(a.end, b.start) for a, b in itertools.pairwise(spans) if b.start > a.end]
    if spans and end - spans[-1].end > min_gap_s:
        gaps.append(Span(spans[-1].end, end))
    return [Span(max(g.start, start), min(g.end, end)) for g in gaps if g.end > start and g.start < end]


def clip(spans: list[Span], start: float, end: float) -> list[Span]:
    return [Span(max(s.start, start), min(s.end, end)) for s in spans if s.end > start and s.start < end]
