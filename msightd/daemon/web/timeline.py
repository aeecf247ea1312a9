"""Recorded spans and gaps of one sensor, from its segments' capture times (pure logic).

A segment covers ``[first_capture, last_capture + 1/fps)``: its last frame stands for one frame period.
Two segments belong to one span when the next one starts within ``GAP_FRAME_PERIODS`` frame periods of
the previous one's last frame; anything longer is a gap. This works on segment rows (cheap enough for a
day of 10-second segments on every page load); a camera outage *inside* a segment (the aggregator keeps
filling a segment across an outage) shows as a segment whose capture times span more than its frames
need (:func:`segment_has_gap`): only such a segment's per-frame capture times are read, to split it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from msightd.storage.gaps import DEFAULT_MIN_FRAME_PERIODS

#: No frame for longer than this many frame periods is a gap (as ``msightd segments gaps`` says).
GAP_FRAME_PERIODS = DEFAULT_MIN_FRAME_PERIODS


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


S = TypeVar("S", bound=SegmentTimes)


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
    """True when the segment's frames span so much longer than its frame count needs that a gap of
    ``gap_periods`` may be inside (on the generous side: its frames are then read to know)."""
    period = _period(segment)
    if period == 0 or segment.frame_count < 2:
        return False
    needed = (segment.frame_count - 1) * period
    return segment.last_capture_timestamp - segment.first_capture_timestamp > needed + (gap_periods - 2) * period


@dataclass(frozen=True)
class _Run:
    """Frames with no gap between them: first and last capture time, frame period."""

    first: float
    last: float
    period: float


def _runs(segment: S, gap_periods: float, frames_of: Callable[[S], Sequence[float]] | None) -> list[_Run]:
    period = _period(segment)
    if frames_of is None or not segment_has_gap(segment, gap_periods):
        return [_Run(segment.first_capture_timestamp, segment.last_capture_timestamp, period)]
    stamps = sorted(frames_of(segment))
    runs = [_Run(stamps[0], stamps[0], period)] if stamps else []
    for stamp in stamps[1:]:
        if stamp - runs[-1].last > gap_periods * period:
            runs.append(_Run(stamp, stamp, period))
        else:
            runs[-1] = _Run(runs[-1].first, stamp, period)
    return runs


def recorded_spans(
    segments: Iterable[S],
    gap_periods: float = GAP_FRAME_PERIODS,
    frames_of: Callable[[S], Sequence[float]] | None = None,
) -> list[Span]:
    """Merge segments (any order) into spans of continuous recording, oldest first. With ``frames_of``
    (a segment's frame capture times), a segment that may hold a gap is split at it."""
    runs = sorted(
        (run for segment in segments for run in _runs(segment, gap_periods, frames_of)), key=lambda r: r.first
    )
    spans: list[Span] = []
    last_frame = 0.0
    for run in runs:
        end = run.last + run.period
        if spans and run.first - last_frame <= gap_periods * run.period:
            if end > spans[-1].end:
                spans[-1] = Span(spans[-1].start, end)
        else:
            spans.append(Span(run.first, end))
        last_frame = max(last_frame, run.last)
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
