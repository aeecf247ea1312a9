from __future__ import annotations

from msightd.messages import FrameMessage
from msightd.nodes.aggregator import BufferedFrame, OpenSegment, SegmentAssembler


class RecordingSegment(OpenSegment):
    aborted = 0

    def abort(self) -> None:
        RecordingSegment.aborted += 1


def frame(frame_id: int, size: tuple[int, int, int] = (4, 4, 3)) -> BufferedFrame:
    return BufferedFrame(
        FrameMessage("cam", float(frame_id), float(frame_id), frame_id, "dev", b"", size), lambda: None
    )


def assembler(buffer_size: int, overlap_size: int) -> SegmentAssembler:
    return SegmentAssembler(buffer_size, overlap_size, RecordingSegment)


def ids(segment: OpenSegment) -> list[int]:
    return [f.message.frame_id for f in segment.frames]


def feed(target: SegmentAssembler, frame_ids: range) -> list[list[int]]:
    return [ids(segment) for i in frame_ids for segment in target.add(frame(i), None)]


def test_segments_without_overlap_partition_the_frames() -> None:
    target = assembler(buffer_size=3, overlap_size=0)
    assert feed(target, range(8)) == [[0, 1, 2], [3, 4, 5]]
    assert [ids(s) for s in target.flush()] == [[6, 7]]
    assert target.flush() == []


def test_consecutive_segments_share_the_overlap() -> None:
    target = assembler(buffer_size=4, overlap_size=2)
    assert feed(target, range(10)) == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]


def test_flush_of_only_carried_overlap_emits_nothing() -> None:
    target = assembler(buffer_size=4, overlap_size=2)
    feed(target, range(4))
    before = RecordingSegment.aborted
    assert target.flush() == [], "the overlap frames were already published in the last segment"
    assert RecordingSegment.aborted == before + 1, "the encoder of the dropped segment is released"


def test_flush_after_new_frames_includes_overlap_context_once() -> None:
    target = assembler(buffer_size=4, overlap_size=2)
    feed(target, range(7))  # [0-3], [2-5] published; [4,5,6] and [6] open
    assert [ids(s) for s in target.flush()] == [[4, 5, 6]]


def test_size_change_closes_the_segment_early() -> None:
    target = assembler(buffer_size=4, overlap_size=1)
    segments = feed(target, range(3))
    segments += [ids(s) for s in target.add(frame(3, size=(8, 8, 3)), None)]
    assert segments == [[0, 1, 2]]
    assert [ids(s) for s in target.open] == [[3]]
    assert [ids(s) for i in range(4, 7) for s in target.add(frame(i, size=(8, 8, 3)), None)] == [[3, 4, 5, 6]]
