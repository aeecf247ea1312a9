from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from msightd.media.gop_segmenter import ClosedSegment, GopSegmenter


@dataclass(frozen=True)
class P:
    """A packet for the rule: its number, keyframe flag and stream (e.g. a resolution)."""

    n: int
    key: bool
    stream: str = "1280x960"


def stream_of(count: int, gop: int, start: int = 0, stream: str = "1280x960") -> list[P]:
    return [P(n, n % gop == 0, stream) for n in range(start, start + count)]


def segmenter(buffer_size: int, overlap_size: int = 0) -> GopSegmenter[P]:
    return GopSegmenter(buffer_size, overlap_size, lambda p: p.key, lambda p: p.stream)


def feed(seg: GopSegmenter[P], packets: Iterable[P], continuous: bool = True) -> list[ClosedSegment[P]]:
    closed: list[ClosedSegment[P]] = []
    for index, packet in enumerate(packets):
        closed += seg.add(packet, continuous or index > 0).closed
    return closed


def numbers(segment: ClosedSegment[P]) -> list[int]:
    return [p.n for p in segment.items]


def test_gop_24_with_buffer_100_gives_120_frame_segments_starting_on_keyframes() -> None:
    seg = segmenter(100)
    closed = feed(seg, stream_of(400, gop=24))
    assert [len(s.items) for s in closed] == [120, 120, 120]
    assert [s.items[0].n for s in closed] == [0, 120, 240]
    assert all(s.items[0].key and s.overlap == 0 and s.reason == "size" for s in closed)
    last = seg.close("end")
    assert numbers(last[0]) == list(range(360, 400)) and last[0].reason == "end"


def test_gop_dividing_buffer_size_gives_exactly_buffer_size() -> None:
    closed = feed(segmenter(100), stream_of(301, gop=10))
    assert [len(s.items) for s in closed] == [100, 100, 100]


def test_gop_longer_than_buffer_size_gives_one_gop_segments() -> None:
    closed = feed(segmenter(100), stream_of(500, gop=150))
    assert [len(s.items) for s in closed] == [150, 150, 150]


def test_overlap_is_rounded_up_to_whole_gops() -> None:
    closed = feed(segmenter(100, overlap_size=30), stream_of(400, gop=24))
    first, second = closed[0], closed[1]
    assert numbers(first) == list(range(120))
    # 30 frames of overlap need two GOPs (48 frames): the next segment starts at keyframe 72
    assert second.items[0].n == 72 and second.overlap == 48 and second.items[0].key
    assert len(second.items) == 120  # 48 + 72: closes at the first keyframe at or after 100 frames


def test_overlap_never_repeats_a_whole_segment() -> None:
    closed = feed(segmenter(100, overlap_size=99), stream_of(600, gop=50))
    # segments of 100 frames (2 GOPs); 99 frames of overlap would need both: only the last one is repeated
    assert [s.items[0].n for s in closed] == [0, 50, 100, 150, 200, 250, 300, 350, 400, 450]
    assert all(s.overlap == 50 for s in closed[1:])


def test_single_gop_segments_have_no_overlap() -> None:
    closed = feed(segmenter(10, overlap_size=5), stream_of(100, gop=30))
    assert [s.items[0].n for s in closed] == [0, 30, 60] and all(s.overlap == 0 for s in closed)


def test_stream_change_closes_before_the_new_stream_and_waits_for_its_keyframe() -> None:
    seg = segmenter(100, overlap_size=10)
    closed = feed(seg, stream_of(35, gop=10))
    assert closed == []
    results = [seg.add(p) for p in stream_of(12, gop=10, start=1, stream="640x480")]
    assert [r.kept for r in results] == [False] * 9 + [True] * 3  # 1..9 skipped: no keyframe yet
    change = results[0].closed
    assert numbers(change[0]) == list(range(35)) and change[0].reason == "stream_changed"
    tail = seg.close("end")
    assert numbers(tail[0]) == [10, 11, 12] and tail[0].overlap == 0


def test_discontinuity_closes_after_the_last_good_packet() -> None:
    seg = segmenter(100)
    feed(seg, stream_of(25, gop=10))
    outage = seg.add(P(40, key=False), continuous=False)
    assert not outage.kept and outage.closed[0].reason == "discontinuity"
    assert numbers(outage.closed[0]) == list(range(25))
    assert seg.add(P(50, key=True)).kept


def test_end_of_input_emits_the_open_segment_with_its_overlap_counted() -> None:
    seg = segmenter(20, overlap_size=10)
    closed = feed(seg, stream_of(41, gop=10))
    assert [(numbers(s)[0], len(s.items), s.overlap) for s in closed] == [(0, 20, 0), (10, 20, 10), (20, 20, 10)]
    tail = seg.close("end")
    assert numbers(tail[0]) == list(range(30, 41)) and tail[0].overlap == 10
    assert seg.close("end") == []
