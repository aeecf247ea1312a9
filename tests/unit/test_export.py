"""Export on real H.264 segments (with B-frames, as the aggregator writes them), decoded back."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import structlog

from msightd.storage.catalog import SegmentCatalog
from msightd.storage.export import ExportError, export_clip
from tests.support.segments import encode_frames, write_segment

T0 = 1_780_000_000.0
FPS = 10.0


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="gray") for frame in container.decode(container.streams.video[0])]


@pytest.fixture
def recording(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """Three back-to-back 20-frame segments of sample frames 0..59 (frame i captured at T0 + i/10), and
    every frame decoded from them."""
    save_dir = tmp_path / "videos"
    frames: list[np.ndarray] = []
    for index in range(3):
        written = write_segment(save_dir, "cam", T0 + 2 * index, frame_count=20, first_index=20 * index)
        frames += decode(written.video_path)
    return save_dir, frames


def export(save_dir: Path, start: float, end: float, output: Path) -> tuple[list[np.ndarray], dict]:
    with SegmentCatalog.open_or_rebuild(save_dir, structlog.get_logger()) as catalog:
        result = export_clip(catalog, "cam", start, end, output)
    metadata = json.loads(result.metadata_path.read_text())
    assert metadata["frame_count"] == result.frame_count
    return decode(result.video_path), metadata


@pytest.mark.parametrize(
    ("first", "stop"),
    [(0, 60), (5, 50), (25, 34), (20, 40), (41, 42), (3, 19)],
    ids=["all", "across-three", "inside-one", "one-whole-segment", "one-frame", "cut-both-ends"],
)
def test_the_clip_shows_exactly_the_frames_captured_in_the_range(
    recording: tuple[Path, list[np.ndarray]], tmp_path: Path, first: int, stop: int
) -> None:
    save_dir, source = recording
    # a range from just before frame `first` to just before frame `stop`
    clip, metadata = export(save_dir, T0 + first / FPS - 0.01, T0 + stop / FPS - 0.01, tmp_path / "clip.mp4")
    assert len(clip) == stop - first == metadata["frame_count"]
    assert all(np.array_equal(got, want) for got, want in zip(clip, source[first:stop], strict=True))
    assert [f["frame_id"] for f in metadata["clip_frames"]] == list(range(1000 + first, 1000 + stop))
    assert metadata["source_segments"] == sorted({f["segment"] for f in metadata["clip_frames"]})


def test_overlapping_segments_give_each_frame_once(tmp_path: Path) -> None:
    """overlap_size 5: each segment repeats the previous one's last 5 frames."""
    save_dir = tmp_path / "videos"
    source: dict[int, np.ndarray] = {}
    for first in (0, 15, 30):
        stamps = [T0 + i / FPS for i in range(first, first + 20)]
        written = write_segment(save_dir, "cam", stamps[0], capture_timestamps=stamps, first_index=first)
        for offset, frame in enumerate(decode(written.video_path)):
            source.setdefault(first + offset, frame)
    clip, metadata = export(save_dir, T0 + 0.25, T0 + 4.75, tmp_path / "clip.mp4")
    assert len(clip) == 45 == metadata["frame_count"]
    assert all(np.array_equal(got, source[3 + i]) for i, got in enumerate(clip))
    ids = [f["frame_id"] for f in metadata["clip_frames"]]
    assert ids == sorted(set(ids))


def test_the_clip_appears_only_when_complete_and_plays_in_order(
    recording: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    save_dir, _ = recording
    export(save_dir, T0, T0 + 6, tmp_path / "out" / "clip.mp4")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.json", "clip.mp4"]
    with av.open(str(tmp_path / "out" / "clip.mp4")) as container:
        stream = container.streams.video[0]
        times = [frame.time for frame in container.decode(stream)]
    assert times == sorted(times) and abs(times[-1] - times[0] - 5.9) < 0.01


def test_an_empty_range_says_so(recording: tuple[Path, list[np.ndarray]], tmp_path: Path) -> None:
    save_dir, _ = recording
    with pytest.raises(ExportError, match="no frames of sensor 'cam' in the range"):
        export(save_dir, T0 + 100, T0 + 200, tmp_path / "clip.mp4")
    assert not list(tmp_path.glob("*.mp4"))


def test_segments_of_another_size_are_not_joined_and_the_error_names_the_segment(tmp_path: Path) -> None:
    save_dir = tmp_path / "videos"
    write_segment(save_dir, "cam", T0, frame_count=10)
    bigger = encode_frames(10, 10, width=320, height=240)
    odd = write_segment(save_dir, "cam", T0 + 1, frame_count=10, video=bigger)
    with pytest.raises(ExportError, match=f"{odd.video_path.name} differs from the segments before it"):
        export(save_dir, T0, T0 + 2, tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists() and not list(tmp_path.glob(".clip*"))


def test_the_clip_says_whose_clock_its_capture_times_are(
    recording: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    save_dir, _frames = recording
    assert export(save_dir, T0, T0 + 3.95, tmp_path / "arrival.mp4")[1]["capture_clock"] == "arrival"
    last = sorted(save_dir.glob("*.json"))[-1]  # the third segment, as a camera-clock segment
    document = json.loads(last.read_text())
    last.write_text(json.dumps({**document, "capture_clock": "camera"}))
    assert export(save_dir, T0 + 4.05, T0 + 5.95, tmp_path / "camera.mp4")[1]["capture_clock"] == "camera"
    assert export(save_dir, T0, T0 + 5.95, tmp_path / "both.mp4")[1]["capture_clock"] == "mixed"
