"""The three launch commands as subprocesses against a real redis-server, files decoded back."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from testbed.waiting import wait_for
from tests.integration.pipeline import launch, segments_on_disk, start_consumers
from tests.support.processes import Proc, command
from tests.support.redis import RedisEndpoint
from tests.support.video import probe_video


def test_file_source_pipeline_with_overlap_writes_complete_segments(
    redis_server: RedisEndpoint, sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    url = redis_server.url
    dumper, aggregator = start_consumers(processes, tmp_path, url, buffer=20, overlap=5)
    source = launch(
        processes,
        tmp_path,
        "rtsp",
        [
            "msight_launch_rtsp",
            "-n",
            "rtsp_node",
            "-u",
            str(sample_video),
            "-pt",
            "rtsp_images",
            "--sensor-name",
            "test_camera",
            "--loop",
        ],
        url,
    )
    save_dir = tmp_path / "received_videos"
    wait_for(lambda: len(segments_on_disk(save_dir)) >= 3, 60, "three segments on disk")
    assert source.terminate() == 0
    # The source is gone; stopping the aggregator flushes its partial buffer, which the dumper writes.
    written_before = len(segments_on_disk(save_dir))
    published = [e["frame_id"] for e in source.events() if e.get("event") == "frame_captured"]
    assert aggregator.terminate() == 0
    wait_for(lambda: len(segments_on_disk(save_dir)) > written_before or None, 30, "the flushed partial segment")
    assert dumper.terminate() == 0

    segments = segments_on_disk(save_dir)
    all_ids: list[int] = []
    for index, (video_path, meta) in enumerate(segments):
        info = probe_video(video_path)
        assert info.frame_count == meta["frame_count"] == len(meta["frames"])
        assert (info.width, info.height, info.codec, info.pix_fmt) == (640, 480, "h264", "yuv420p")
        assert info.fps == pytest.approx(10.0)
        assert meta["sensor_name"] == "test_camera" and meta["device_name"] == "test-edge"
        assert meta["video_sha256"] == hashlib.sha256(video_path.read_bytes()).hexdigest()
        assert meta["video_size_bytes"] == video_path.stat().st_size
        assert video_path.name.startswith("test_camera_") and video_path.stem == Path(meta["video_file"]).stem
        ids = [f["frame_id"] for f in meta["frames"]]
        assert ids == sorted(ids), "frames are in capture order"
        if index < len(segments) - 1:
            assert len(ids) == 20
        if all_ids:
            assert ids[:5] == all_ids[-5:], "consecutive segments share --overlap-size frames"
            all_ids += ids[5:]
        else:
            all_ids = ids
    # every frame the source published is in a segment, exactly once outside the overlaps
    assert all_ids == published


def test_bad_flags_exit_2_with_one_clear_line(tmp_path: Path) -> None:
    cases = [
        (
            [
                "msight_launch_image_to_video_aggregator",
                "-n",
                "a",
                "-st",
                "x",
                "-pt",
                "y",
                "--buffer-size",
                "10",
                "--overlap-size",
                "10",
            ],
            "overlap",
        ),
        (["msight_launch_image_to_video_aggregator", "-n", "a", "-st", "x", "-pt", "y", "--fps", "ten"], "--fps"),
        (["msight_launch_rtsp", "-n", "r", "-pt", "x", "--sensor-name", "c"], "-u/--url"),
        (
            ["msight_launch_rtsp", "-n", "r", "-u", "x.mp4", "-pt", "x", "--sensor-name", "c", "--jpeg-quality", "0"],
            "--jpeg-quality",
        ),
        (["msight_launch_video_local_dumper", "-n", "d", "-st", "x", "-sd", "v", "--bogus"], "--bogus"),
        (
            ["msight_launch_video_local_dumper", "-n", "d", "-st", "x", "-sd", "v", "--stream-maxlen", "0"],
            "--stream-maxlen must be >= 1",
        ),
        (
            ["msight_launch_video_local_dumper", "-n", "d", "-st", "x", "-sd", "v", "--transport", "kafka"],
            "--transport",
        ),
    ]
    for args, expected in cases:
        result = subprocess.run([command(args[0]), *args[1:]], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)


def test_missing_video_file_exits_2_naming_it(redis_server: RedisEndpoint, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            command("msight_launch_rtsp"),
            "-n",
            "r",
            "-u",
            str(tmp_path / "nope.mp4"),
            "-pt",
            "x",
            "--sensor-name",
            "c",
            "--redis-url",
            redis_server.url,
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "nope.mp4" in result.stderr and "does not exist" in result.stderr
