from __future__ import annotations

from pathlib import Path

import structlog

from msightd.storage.catalog import SegmentCatalog
from msightd.storage.gaps import find_gaps
from tests.support.segments import write_segment

T0 = 1_780_000_000.0


def stamps(start: float, count: int, fps: float = 10.0) -> list[float]:
    return [start + i / fps for i in range(count)]


def write(save_dir: Path, sensor: str, capture_timestamps: list[float]) -> None:
    write_segment(save_dir, sensor, capture_timestamps[0], capture_timestamps=capture_timestamps, video=b"v")


def test_an_outage_between_segments_is_one_gap_from_last_frame_to_first_frame(tmp_path: Path) -> None:
    write(tmp_path, "cam", stamps(T0, 20))
    write(tmp_path, "cam", stamps(T0 + 2, 20))  # contiguous: no gap at the boundary
    write(tmp_path, "cam", stamps(T0 + 7.5, 20))  # 3.6 s after the last frame at T0 + 3.9
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        gaps = find_gaps(catalog)
    assert [(g.sensor_name, g.start, g.end) for g in gaps] == [("cam", T0 + 3.9, T0 + 7.5)]
    assert gaps[0].missing_frames == 35 and abs(gaps[0].duration_s - 3.6) < 1e-6


def test_a_gap_inside_a_segment_and_jitter_below_the_threshold(tmp_path: Path) -> None:
    jittery = [T0, T0 + 0.1, T0 + 0.28, T0 + 0.4, T0 + 0.5, T0 + 1.5, T0 + 1.6]  # 0.18 s jitter, 1 s hole
    write(tmp_path, "cam", jittery)
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        assert [(g.start, g.end) for g in find_gaps(catalog)] == [(T0 + 0.5, T0 + 1.5)]
        assert [(g.start, g.end) for g in find_gaps(catalog, min_frame_periods=1.5)] == [
            (T0 + 0.1, T0 + 0.28),
            (T0 + 0.5, T0 + 1.5),
        ]


def test_gaps_are_per_sensor_and_a_range_counts_its_edges(tmp_path: Path) -> None:
    write(tmp_path, "a", stamps(T0 + 5, 20))  # frames T0+5 .. T0+6.9
    write(tmp_path, "b", stamps(T0, 100))  # frames T0 .. T0+9.9, no gap
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        gaps = find_gaps(catalog, start=T0, end=T0 + 10)
        assert [(g.sensor_name, g.start, g.end) for g in gaps] == [("a", T0, T0 + 5), ("a", T0 + 6.9, T0 + 10)]
        assert find_gaps(catalog, sensor="b", start=T0, end=T0 + 10) == []
        # an end in the future counts only up to now
        assert [g.end for g in find_gaps(catalog, "a", start=T0 + 5, end=T0 + 1000, now=T0 + 8)] == [T0 + 8]
