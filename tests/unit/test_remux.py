from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import pytest

from msightd.media.capture import CaptureSettings
from msightd.media.packets import AccessUnit, PacketCapture, keyframe_picture
from msightd.media.remux import packet_segment, plan_timeline, remux_mp4
from tests.support.clips import framemd5, mp4_sample_md5, write_clip
from tests.support.video import probe_video

TB = Fraction(1, 90000)


def read_all(path: Path) -> list[AccessUnit]:
    capture = PacketCapture(CaptureSettings(str(path), True, "tcp", 5.0, 2.0, 1))
    try:
        units = []
        while (unit := capture.read()) is not None:
            units.append(unit)
        return units
    finally:
        capture.close()


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_remuxed_file_holds_the_sources_bytes_frame_for_frame(codec: str, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / f"{codec}.mp4", codec=codec, frames=30, gop=10)
    units = read_all(clip)
    assert len(units) == 30 and units[0].keyframe and (units[0].width, units[0].height) == (640, 480)
    assert [u.keyframe for u in units].count(True) == 3
    video = remux_mp4(units, fallback_fps=25.0)
    segment = tmp_path / "segment.mp4"
    segment.write_bytes(video.data)
    assert framemd5(segment) == [mp4_sample_md5(u.data) for u in units]
    assert (video.codec, video.width, video.height, video.frame_count) == (codec, 640, 480, 30)
    assert video.fps == pytest.approx(10.0) and video.timestamps_from == "pts"
    info = probe_video(video.data)
    assert (info.frame_count, info.width, info.height, info.codec) == (30, 640, 480, codec)
    assert info.fps == pytest.approx(10.0)


def test_a_segment_cut_at_a_later_keyframe_decodes_alone(tmp_path: Path) -> None:
    units = read_all(write_clip(tmp_path / "clip.mp4", frames=30, gop=10))
    video = remux_mp4(units[10:20], fallback_fps=10.0)
    assert probe_video(video.data).frame_count == 10


def test_looping_a_file_keeps_timestamps_increasing(tmp_path: Path) -> None:
    capture = PacketCapture(CaptureSettings(str(write_clip(tmp_path / "c.mp4", frames=20)), True, "tcp", 5, 2, 1))
    try:
        first = [capture.read() for _ in range(20)]
        assert capture.read() is None
        capture.rewind()
        second = [capture.read() for _ in range(20)]
    finally:
        capture.close()
    units = [u for u in first + second if u is not None]
    pts = [u.pts for u in units if u.pts is not None]
    assert len(pts) == 40 and sorted(pts) == sorted(set(pts))
    assert min(pts[20:]) - max(pts[:20]) == units[0].duration  # one frame apart across the seam


def test_timeline_rebases_camera_pts_and_keeps_b_frames_valid() -> None:
    # decode order of an IBBP stream: shown 0, 3, 1, 2, 6, 4, 5 (x 3600 ticks), camera clock at 1e6
    pts = [1_000_000 + 3600 * n for n in (0, 3, 1, 2, 6, 4, 5)]
    timeline = plan_timeline(pts, [3600] * 7, TB, fallback_fps=10.0)
    assert timeline.source == "pts"
    assert timeline.pts == [3600 * n for n in (0, 3, 1, 2, 6, 4, 5)]
    assert all(d <= p for d, p in zip(timeline.dts, timeline.pts, strict=True))
    assert timeline.dts == sorted(set(timeline.dts))
    assert timeline.span == 7 * 3600


def test_timeline_keeps_camera_jitter() -> None:
    pts = [0, 9000, 17000, 27500, 36000]
    assert plan_timeline(pts, [0] * 5, TB, 10.0).pts == pts


@pytest.mark.parametrize(
    ("pts", "expected"),
    [
        ([None, 9000, 18000, 27000], [0, 9000, 18000, 27000]),
        ([None, None, 18000, 27000], [0, 9000, 18000, 27000]),
        ([None, 36000, 18000, 9000, 27000], [0, 36000, 18000, 9000, 27000]),  # B-frames: the keyframe is first
    ],
)
def test_missing_pts_at_the_start_are_filled(pts: list[int | None], expected: list[int]) -> None:
    timeline = plan_timeline(pts, [9000] * len(pts), TB, fallback_fps=25.0)
    assert timeline.source == "pts" and timeline.pts == expected


@pytest.mark.parametrize(
    "pts", [[None, None, None], [0, 9000, 9000, 18000], [9000 * n for n in range(1, 21)] + [500]], ids=str
)
def test_missing_duplicate_or_wildly_reordered_pts_fall_back_to_fps(pts: list[int | None]) -> None:
    timeline = plan_timeline(pts, [0] * len(pts), TB, fallback_fps=10.0)
    assert timeline.source == "fps" and timeline.pts == timeline.dts == [9000 * n for n in range(len(pts))]


def test_segment_without_timestamps_plays_at_the_fallback_fps(tmp_path: Path) -> None:
    units = [dataclasses.replace(u, pts=None, dts=None, duration=0) for u in read_all(write_clip(tmp_path / "c.mp4"))]
    video = remux_mp4(units[:10], fallback_fps=5.0)
    assert video.timestamps_from == "fps" and video.fps == pytest.approx(5.0)
    info = probe_video(video.data)
    assert info.frame_count == 10 and info.fps == pytest.approx(5.0)


def test_a_keyframe_decodes_on_its_own_for_a_thumbnail(tmp_path: Path) -> None:
    units = read_all(write_clip(tmp_path / "c.mp4", frames=20, gop=10))
    picture = keyframe_picture(units[10])
    assert picture is not None and picture.bgr().shape == (480, 640, 3)
    assert keyframe_picture(dataclasses.replace(units[10], data=b"\x00\x00\x00\x01\x65garbage")) is None


@pytest.mark.parametrize("clock", ["camera", "arrival"])
def test_frames_stamped_by_the_cameras_clock_are_listed_as_shown(clock: str, tmp_path: Path) -> None:
    """With B-frames, frames arrive (and are stored) in decode order. By the camera's clock each one's time
    is when it was sampled, so the JSON lists them in the order a decoder shows them; arrival times keep the
    order they arrived in."""
    units = read_all(write_clip(tmp_path / "clip.mp4", frames=20, gop=10))
    pts = [unit.pts for unit in units]
    assert pts != sorted(pts), "the clip has B-frames"
    base = 1_796_000_000.0
    messages = [
        dataclasses.replace(
            unit.to_message("cam", "edge1", 100 + index, base + index * 0.1, index),
            capture_timestamp=base + float(unit.pts * unit.time_base) if clock == "camera" else base + index * 0.1,
            capture_clock=clock,
        )
        for index, unit in enumerate(units)
        if unit.pts is not None
    ]
    segment, _video = packet_segment(messages, 10.0, "edge1")
    by_id = {message.frame_id: message.capture_timestamp for message in messages}
    assert [by_id[frame_id] for frame_id in segment.frame_ids] == list(segment.capture_timestamps)
    if clock == "camera":
        assert list(segment.capture_timestamps) == sorted(by_id.values())
        assert list(segment.frame_ids) != [message.frame_id for message in messages]
    else:
        assert list(segment.frame_ids) == [message.frame_id for message in messages]
    assert segment.extra == {"capture_clock": clock}
