from __future__ import annotations

from msightd.messages import FrameMessage
from msightd.nodes.aggregator import BufferedFrame, SegmentWindow


def frame(frame_id: int, size: tuple[int, int, int] = (4, 4, 3), sensor: str = "cam") -> BufferedFrame:
    message = FrameMessage(sensor, float(frame_id), float(frame_id), frame_id, "dev", b"", size)
    return BufferedFrame(message, lambda: None)


def ids(frames: list[BufferedFrame]) -> list[int]:
    return [f.message.frame_id for f in frames]


def feed(window: SegmentWindow, frame_ids: range) -> list[list[int]]:
    segments = []
    for i in frame_ids:
        segments += [ids(s) for s in window.add(frame(i))]
    return segments


def test_segments_without_overlap_partition_the_frames() -> None:
    window = SegmentWindow(buffer_size=3, overlap_size=0)
    assert feed(window, range(8)) == [[0, 1, 2], [3, 4, 5]]
    assert ids(window.flush() or []) == [6, 7]
    assert window.flush() is None


def test_consecutive_segments_share_the_overlap() -> None:
    window = SegmentWindow(buffer_size=4, overlap_size=2)
    assert feed(window, range(10)) == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]


def test_flush_of_only_carried_overlap_emits_nothing() -> None:
    window = SegmentWindow(buffer_size=4, overlap_size=2)
    feed(window, range(4))
    assert window.flush() is None, "the overlap frames were already published in the last segment"


def test_flush_after_new_frames_includes_overlap_context() -> None:
    window = SegmentWindow(buffer_size=4, overlap_size=2)
    feed(window, range(5))
    assert ids(window.flush() or []) == [2, 3, 4]


def test_size_change_closes_the_segment_early() -> None:
    window = SegmentWindow(buffer_size=4, overlap_size=1)
    segments = [ids(s) for i in range(3) for s in window.add(frame(i))]
    segments += [ids(s) for s in window.add(frame(3, size=(8, 8, 3)))]
    assert segments == [[0, 1, 2]]
    assert [f.message.size for f in window.frames] == [(8, 8, 3)]
