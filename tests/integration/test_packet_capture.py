"""Demux-only capture from a real RTSP camera (GStreamer server), segmented and remuxed without decoding."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msightd.media.capture import CaptureSettings, PyAvCapture
from msightd.media.gop_segmenter import ClosedSegment, GopSegmenter
from msightd.media.packets import AccessUnit, PacketCapture
from msightd.media.remux import remux_mp4
from tests.support.clips import (
    file_pictures,
    framemd5,
    mp4_sample_md5,
    passthrough_clips,
    pictures,
    serve_files,
)
from tests.support.video import probe_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return passthrough_clips(tmp_path_factory.mktemp("clips"))


def open_camera(url: str, timeout_s: float = 20.0) -> PacketCapture:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return PacketCapture(CaptureSettings(url, False, "tcp", 5.0, 2.0, 1))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_units(capture: PacketCapture, count: int) -> Iterator[AccessUnit]:
    for _ in range(count):
        unit = capture.read()
        assert unit is not None, "camera stopped sending"
        yield unit


def segments_of(units: list[AccessUnit], buffer_size: int) -> list[ClosedSegment[AccessUnit]]:
    segmenter: GopSegmenter[AccessUnit] = GopSegmenter(
        buffer_size, 0, lambda u: u.keyframe, lambda u: (u.codec, u.extradata, u.width, u.height)
    )
    closed = [segment for unit in units for segment in segmenter.add(unit).closed]
    return closed + segmenter.close("end")


def assert_bit_exact(segment: list[AccessUnit], data: bytes, path: Path) -> None:
    path.write_bytes(data)
    assert framemd5(path) == [mp4_sample_md5(unit.data) for unit in segment]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_camera_bitstream_is_recorded_bit_exact(codec: str, clips: dict[str, Path], tmp_path: Path) -> None:
    source = file_pictures(clips[codec], codec)
    with serve_files([clips[codec]]) as camera:
        capture = open_camera(camera.url)
        try:
            units = list(read_units(capture, 45))
        finally:
            capture.close()
    assert {u.codec for u in units} == {codec} and {(u.width, u.height) for u in units} == {(640, 480)}
    segments = segments_of(units, buffer_size=10)
    assert len(segments) >= 3 and all(len(s.items) == 10 for s in segments[:-1])  # GOP 10: 10-frame segments
    for index, segment in enumerate(segments):
        video = remux_mp4(segment.items, fallback_fps=10.0)
        assert_bit_exact(segment.items, video.data, tmp_path / f"{index}.mp4")
        assert video.timestamps_from == "pts" and video.fps == pytest.approx(10.0, rel=0.05)
        assert probe_video(video.data).frame_count == len(segment.items)
        # the coded pictures are the encoder's own, in the clip's order (the server loops the clip)
        positions = [source.index(pictures(codec, unit.data)) for unit in segment.items]
        assert positions == [(positions[0] + n) % len(source) for n in range(len(positions))]


def test_resolution_change_is_read_from_the_sps_and_ends_the_segment(clips: dict[str, Path], tmp_path: Path) -> None:
    with serve_files([clips["h264"], clips["h264_small"]]) as camera:
        capture = open_camera(camera.url)
        try:
            units = list(read_units(capture, 75))
        finally:
            capture.close()
    sizes = [(u.width, u.height) for u in units]
    assert {(640, 480), (320, 240)} <= set(sizes)
    segments = segments_of(units, buffer_size=100)  # never full: only the size changes close segments
    assert len(segments) >= 2
    for index, segment in enumerate(segments):
        size = (segment.items[0].width, segment.items[0].height)
        assert all((u.width, u.height) == size for u in segment.items)
        video = remux_mp4(segment.items, fallback_fps=10.0)
        info = probe_video(video.data)
        assert (info.width, info.height, info.frame_count) == (*size, len(segment.items))
        assert_bit_exact(segment.items, video.data, tmp_path / f"{index}.mp4")


@pytest.mark.parametrize("decoding", [False, True])
def test_a_camera_that_stalls_is_noticed_within_the_read_timeout(decoding: bool, clips: dict[str, Path]) -> None:
    """The camera's connection stays open but nothing comes (the server is frozen): a read gives up after
    the read timeout (FFmpeg's socket timeout, 2 s here) instead of blocking, and says the source is lost."""
    with serve_files([clips["h264"]]) as server:
        capture = open_camera(server.url) if not decoding else None
        if decoding:
            deadline = time.monotonic() + 20
            while capture is None:
                try:
                    capture = PyAvCapture(CaptureSettings(server.url, False, "tcp", 5.0, 2.0, 1))  # type: ignore[assignment]
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
        assert capture is not None
        try:
            for _ in range(15):
                assert capture.read() is not None
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                results = []
                reader = threading.Thread(target=lambda: results.extend(iter(capture.read, None)), daemon=True)
                reader.start()
                reader.join(30)  # generous: what must not happen is blocking for ever
                assert not reader.is_alive(), "a read blocked on a stalled camera"
                assert time.monotonic() - started >= 2.0, "gave up before the read timeout"
                assert len(results) < 30  # what was in flight, then the stall
            finally:
                os.kill(server.pid, signal.SIGCONT)
        finally:
            capture.close()
