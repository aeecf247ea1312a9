"""Passthrough recording inside the camera node (``--record-dir``): a real RTSP camera, the camera node and
the dumper launch commands, a real redis-server. The segments must hold the camera's coded pictures byte
for byte, in keyframe-aligned segments, catalogued by the dumper; a killed camera node loses no frame."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import redis

from msightd.bus.streams import PAYLOAD_FIELD
from msightd.media.capture import CaptureSettings
from msightd.media.packets import AccessUnit, PacketCapture
from msightd.messages import SegmentStoredMessage
from msightd.storage.catalog import CATALOG_DIR, CATALOG_FILE
from testbed.waiting import wait_for
from tests.integration.pipeline import launch, segments_on_disk
from tests.support.clips import file_pictures, passthrough_clips, pictures, serve_files
from tests.support.filesystems import small_filesystem
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint
from tests.support.video import probe_video

STREAM = ("--transport", "stream")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return passthrough_clips(tmp_path_factory.mktemp("clips"))


def start_dumper(processes: list[Proc], tmp_path: Path, url: str) -> Proc:
    dumper = launch(
        processes, tmp_path, "dumper",
        ["msight_launch_video_local_dumper", "-n", "video_dumper", "-st", "rtsp_images",
         "--save-dir", "./received_videos", *STREAM],
        url,
    )  # fmt: skip
    wait_for(lambda: dumper.has_event("node_ready") or None, 30, "the dumper subscribed")
    return dumper


def start_recording_camera(
    processes: list[Proc], tmp_path: Path, url: str, camera_url: str, buffer: int, name: str = "rtsp"
) -> Proc:
    return launch(
        processes, tmp_path, name,
        ["msight_launch_rtsp", "-n", "rtsp_node", "-u", camera_url, "--sensor-name", "cam", "--read-timeout", "1",
         "-pt", "rtsp_images", "--frame-encoding", "packets", "--record-dir", "./received_videos",
         "--buffer-size", str(buffer), "--shm-dir", str(tmp_path / "shm"), *STREAM],
        url,
    )  # fmt: skip


def units_of(video: Path) -> list[AccessUnit]:
    capture = PacketCapture(CaptureSettings(str(video), True, "tcp", 5.0, 2.0, 1))
    try:
        return list(iter(capture.read, None))
    finally:
        capture.close()


def clip_positions(video: Path, meta: dict[str, Any], codec: str, source: list[tuple[bytes, ...]]) -> list[int]:
    """Checks one segment and returns where each of its frames is in the looping source clip: the coded
    pictures are the camera's byte for byte, the MP4 is valid and agrees with its JSON."""
    units = units_of(video)  # read back as Annex B (parameter sets before keyframes): compare the pictures
    assert units[0].keyframe
    positions = [source.index(pictures(codec, unit.data)) for unit in units]
    assert positions == [(positions[0] + n) % len(source) for n in range(len(units))], "consecutive frames"
    info = probe_video(video)
    assert info.frame_count == meta["frame_count"] == len(meta["frames"]) == len(units)
    assert (info.width, info.height, info.codec) == (meta["width"], meta["height"], meta["codec"]) == (640, 480, codec)
    return positions


def catalogued_stems(save_dir: Path) -> set[str]:
    with sqlite3.connect(save_dir / CATALOG_DIR / CATALOG_FILE) as connection:
        return {row[0] for row in connection.execute("SELECT stem FROM segments")}


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_camera_node_records_bit_exact_segments_that_the_dumper_catalogues(
    codec: str, clips: dict[str, Path], redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    url = redis_server.url
    save_dir = tmp_path / "received_videos"
    with serve_files([clips[codec]]) as server:
        dumper = start_dumper(processes, tmp_path, url)
        camera = start_recording_camera(processes, tmp_path, url, server.url, buffer=25)
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 3, 60, "three segments on disk")
        assert camera.terminate() == 0
        wait_for(lambda: len(dumper.has_event("segment_indexed")) == len(segments_on_disk(save_dir)) or None, 30,
                 "every segment catalogued")  # fmt: skip
        assert dumper.terminate() == 0
    source = file_pictures(clips[codec], codec)
    segments = segments_on_disk(save_dir)
    previous_end = None
    for index, (video, meta) in enumerate(segments):
        positions = clip_positions(video, meta, codec, source)
        if index < len(segments) - 1:
            # GOP 10, --buffer-size 25: a segment closes at the first keyframe at or after 25 frames
            assert len(positions) == 30 and meta["fps"] == pytest.approx(10.0, rel=0.02)
        if previous_end is not None:
            assert positions[0] == (previous_end + 1) % len(source), "no frame lost between segments"
        previous_end = positions[-1]
    assert catalogued_stems(save_dir) == {video.stem for video, _meta in segments}
    assert not camera.has_event("publish_failed") and not dumper.has_event("stored_segment_not_here")


def test_a_killed_camera_node_loses_no_recorded_frame(
    clips: dict[str, Path], redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    """The open segment lives in the spool: the restarted node stores it, and the frames before and after
    the kill are all on disk (only those the camera sent while no node ran are missing)."""
    url = redis_server.url
    save_dir = tmp_path / "received_videos"
    with serve_files([clips["h264"]]) as server:
        start_dumper(processes, tmp_path, url)
        first = start_recording_camera(processes, tmp_path, url, server.url, buffer=20)
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 1, 60, "a first segment")
        wait_for(lambda: first.text().count("frame_captured") >= 45 or None, 60, "a segment half full")
        first.kill()
        frames_read = first.text().count('"frame_captured"')
        written_before = len(segments_on_disk(save_dir))
        second = start_recording_camera(processes, tmp_path, url, server.url, buffer=20, name="rtsp_again")
        wait_for(lambda: second.has_event("open_segment_recovered") or None, 60, "the open segment recovered")
        wait_for(lambda: len(segments_on_disk(save_dir)) >= written_before + 2, 60, "recording goes on")
        assert second.terminate() == 0
    recovered = second.has_event("open_segment_recovered")[0]["frames"]
    source = file_pictures(clips["h264"], "h264")
    segments = segments_on_disk(save_dir)
    frame_ids = [frame["frame_id"] for _video, meta in segments for frame in meta["frames"]]
    for video, meta in segments:
        clip_positions(video, meta, "h264", source)
    assert len(frame_ids) == len(set(frame_ids)), "no frame stored twice"
    first_run = [meta for _video, meta in segments[: written_before + 1]]
    # the first run's frames from its first keyframe up to the kill: all on disk, the last ones recovered
    assert 0 < recovered <= 20 + 10
    # (a frame is logged just before it is spooled: the kill may fall between the two)
    assert frames_read - 1 <= sum(meta["frame_count"] for meta in first_run) <= frames_read


def test_the_dumper_catalogues_only_segment_files_of_its_own_directory(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    """A notice is untrusted input: a path, a name that is not a segment's, or a pair that is not in the
    save directory is refused with one line, and nothing outside the directory is read or catalogued."""
    save_dir = tmp_path / "received_videos"
    outside = tmp_path / "cam_20260124_112845_649586.json"
    outside.write_text("{}")
    dumper = start_dumper(processes, tmp_path, redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    try:
        for index, name in enumerate(["../cam_20260124_112845_649586.json", "/etc/passwd", ".msightd/catalog.sqlite3",
                                      "cam_20260124_112845_649586.json"]):  # fmt: skip
            notice = SegmentStoredMessage(
                sensor_name=f"cam{index}", capture_timestamp=1769254125.6, creation_timestamp=1769254136.0,
                frame_id=index, device_name="edge1", file=name, frame_count=100,
                last_capture_timestamp=1769254135.5, size_bytes=1000,
            )  # fmt: skip
            client.xadd("rtsp_images", {PAYLOAD_FIELD: notice.to_wire()})
    finally:
        client.close()
    wait_for(lambda: len(dumper.has_event("stored_segment_not_here")) == 4 or None, 30, "four refusals")
    assert dumper.terminate() == 0
    assert catalogued_stems(save_dir) == set() and not dumper.has_event("segment_indexed")
    assert outside.read_text() == "{}"


def test_a_full_disk_keeps_segments_in_memory_until_space_comes_back(
    clips: dict[str, Path], redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    """The recording directory fills up: the camera node says so once, keeps the refused segments and
    writes them, in order and without a gap, once space is freed (no dumper here: nothing else writes)."""
    source = file_pictures(clips["h264"], "h264")
    with small_filesystem(tmp_path / "received_videos", 160 * 1024) as save_dir, serve_files([clips["h264"]]) as server:
        camera = start_recording_camera(processes, tmp_path, redis_server.url, server.url, buffer=10)
        wait_for(lambda: camera.has_event("segment_write_failed") or None, 90, "the disk to fill up")
        before = [clip_positions(video, meta, "h264", source) for video, meta in segments_on_disk(save_dir)]
        for video, _meta in segments_on_disk(save_dir):  # what an operator (or the dumper's retention) frees
            video.unlink()
            video.with_suffix(".json").unlink()
        wait_for(lambda: camera.has_event("segment_writes_recovered") or None, 60, "writes to work again")
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 3 or None, 60, "the kept segments and new ones")
        assert camera.terminate() == 0
        after = [clip_positions(video, meta, "h264", source) for video, meta in segments_on_disk(save_dir)]
    assert len(camera.has_event("segment_write_failed")) == 1, "one line per outage"
    assert not camera.has_event("segment_dropped")
    for earlier, later in itertools.pairwise(before + after):
        assert later[0] == (earlier[-1] + 1) % len(source), "no frame lost across the outage"
