"""Recorded spans and gaps from segment capture times."""

from __future__ import annotations

from dataclasses import dataclass

from msightd.daemon.web.timeline import Span, clip, gaps_between, recorded_spans, segment_has_gap


@dataclass(frozen=True)
class Times:
    first_capture_timestamp: float
    last_capture_timestamp: float
    frame_count: int = 100
    fps: float = 10.0


def back_to_back(start: float, count: int) -> list[Times]:
    """``count`` 100-frame segments at 10 fps with no frame missing between them."""
    return [Times(start + 10 * i, start + 10 * i + 9.9) for i in range(count)]


def test_continuous_segments_make_one_span_ending_one_frame_after_the_last() -> None:
    assert recorded_spans(back_to_back(1000.0, 5)) == [Span(1000.0, 1050.0)]


def test_a_missing_stretch_longer_than_five_frame_periods_splits_the_span() -> None:
    segments = [*back_to_back(1000.0, 2), *back_to_back(1060.0, 1)]
    spans = recorded_spans(reversed(segments))  # any order
    assert spans == [Span(1000.0, 1020.0), Span(1060.0, 1070.0)]
    assert gaps_between(spans, 900.0, 1070.0) == [Span(1020.0, 1060.0)]


def test_a_jitter_of_four_frame_periods_is_not_a_gap() -> None:
    segments = [Times(0.0, 9.9), Times(10.3, 20.2)]
    assert recorded_spans(segments) == [Span(0.0, 20.3)]


def test_overlapping_segments_merge() -> None:
    assert recorded_spans([Times(0.0, 9.9), Times(5.0, 14.9), Times(6.0, 8.0)]) == [Span(0.0, 15.0)]


def test_an_ongoing_outage_is_a_trailing_gap_once_longer_than_the_allowance() -> None:
    spans = [Span(0.0, 100.0)]
    assert gaps_between(spans, 0.0, 120.0, min_gap_s=25.0) == []
    assert gaps_between(spans, 0.0, 130.0, min_gap_s=25.0) == [Span(100.0, 130.0)]


def test_gaps_are_clipped_to_the_window_and_time_before_recording_is_not_a_gap() -> None:
    spans = [Span(100.0, 200.0), Span(300.0, 400.0)]
    assert gaps_between(spans, 250.0, 400.0) == [Span(250.0, 300.0)]
    assert gaps_between(spans, 0.0, 400.0) == [Span(200.0, 300.0)]
    assert clip(spans, 150.0, 350.0) == [Span(150.0, 200.0), Span(300.0, 350.0)]


def test_a_segment_whose_frames_span_an_outage_has_a_gap_inside() -> None:
    assert not segment_has_gap(Times(0.0, 9.9))
    assert segment_has_gap(Times(0.0, 60.0))
    assert not segment_has_gap(Times(0.0, 0.0, frame_count=1))


def test_a_segment_with_an_outage_inside_is_split_at_it_by_its_frame_times() -> None:
    """100 frames: 50 from t=0, a 30 s outage, 50 more; only that segment's frames are read."""
    stamps = [i / 10 for i in range(50)] + [34.9 + i / 10 for i in range(50)]
    outage = Times(stamps[0], stamps[-1])
    read: list[Times] = []

    def frames_of(segment: Times) -> list[float]:
        read.append(segment)
        return stamps

    after = Times(39.9, 49.8)
    spans = recorded_spans([outage, after, Times(-10.0, -0.1)], frames_of=frames_of)
    assert spans == [Span(-10.0, 5.0), Span(34.9, 49.9)]
    assert read == [outage]
