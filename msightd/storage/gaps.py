"""Spans of time with no frames, per sensor, from the per-frame capture times in the segment JSON files.

A gap is a stretch between two consecutive captured frames (inside a segment or across segments) longer
than ``min_frame_periods`` frame periods (1 / the segment's fps). When the question has a start or an end,
the stretch from the start to the first frame and from the last frame to the end (or to ``now``, when the
end is in the future) count too: a camera that was down when the range began has a gap there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from msightd.storage.catalog import SegmentCatalog, SegmentRecord, read_frames

DEFAULT_MIN_FRAME_PERIODS = 5.0


@dataclass(frozen=True)
class Gap:
    """No frames of ``sensor_name`` strictly between ``start`` and ``end`` (epoch seconds, UTC): ``start``
    is the last frame before the gap (or the range start), ``end`` the first after (or the range end)."""

    sensor_name: str
    start: float
    end: float
    frame_period_s: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def missing_frames(self) -> int:
        """Frames a camera at the segments' frame rate would have delivered inside the gap."""
        return max(0, round(self.duration_s / self.frame_period_s) - 1)


def find_gaps(
    catalog: SegmentCatalog,
    sensor: str | None = None,
    start: float | None = None,
    end: float | None = None,
    min_frame_periods: float = DEFAULT_MIN_FRAME_PERIODS,
    now: float | None = None,
) -> list[Gap]:
    """Gaps of every sensor (or one), ordered by sensor then time."""
    sensors = [sensor] if sensor is not None else catalog.sensors()
    gaps: list[Gap] = []
    for name in sensors:
        records = catalog.segments(name, start, end)
        gaps.extend(_sensor_gaps(catalog, name, records, start, end, min_frame_periods, now))
    return gaps


def _sensor_gaps(
    catalog: SegmentCatalog,
    sensor: str,
    records: Iterable[SegmentRecord],
    start: float | None,
    end: float | None,
    min_frame_periods: float,
    now: float | None,
) -> list[Gap]:
    gaps: list[Gap] = []
    previous = start
    period = 0.0
    for record in records:
        period = 1.0 / record.fps if record.fps > 0 else 1.0
        for frame in read_frames(catalog.save_dir / record.metadata_file):
            stamp = frame.capture_timestamp
            if (start is not None and stamp < start) or (end is not None and stamp >= end):
                continue
            if previous is not None and stamp > previous and stamp - previous > min_frame_periods * period:
                gaps.append(Gap(sensor, previous, stamp, period))
            previous = stamp if previous is None else max(previous, stamp)
    if end is not None and previous is not None and period:
        limit = end if now is None else min(end, now)
        if limit - previous > min_frame_periods * period:
            gaps.append(Gap(sensor, previous, limit, period))
    return gaps
