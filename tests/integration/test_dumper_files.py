"""The dumper as a real process fed through a real broker: what ends up on disk, by name and content."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from msightd.media.sample import sample_frame
from msightd.media.video import EncoderSettings
from msightd.messages import SegmentMessage
from testbed.waiting import wait_for
from tests.integration.pipeline import launch, segments_on_disk
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint
from tests.support.video import encode_segment, probe_video

START = 1769254140.5  # 2026-01-24 11:29:00.5 UTC; 06:29:00.5 in Detroit


def segment(video: bytes) -> SegmentMessage:
    return SegmentMessage(
        sensor_name="cam",
        capture_timestamp=START,
        creation_timestamp=START + 1,
        frame_id=1000,
        device_name="edge",
        video=video,
        frame_ids=tuple(range(1000, 1005)),
        capture_timestamps=tuple(START + i / 10 for i in range(5)),
        fps=10.0,
        codec="h264",
        width=64,
        height=48,
    )


def test_names_are_utc_in_any_time_zone_and_a_re_encoded_redelivery_is_written_once(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/Detroit")
    frames = [sample_frame(i, 64, 48) for i in range(5)]
    first, second = (encode_segment(frames, EncoderSettings(crf=crf, threads=1)).data for crf in (23, 35))
    assert first != second, "two encodes of the same frames that differ, as after an aggregator restart"
    dumper = launch(
        processes,
        tmp_path,
        "dumper",
        ["msight_launch_video_local_dumper", "-n", "d", "-st", "segs", "--save-dir", "out", "--transport", "stream"],
        redis_server.url,
    )
    wait_for(lambda: dumper.has_event("node_ready"), 60, "the dumper to subscribe")
    assert dumper.events()[0]["timestamp"].endswith("-05:00"), "the node runs in Detroit's winter time"
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.xadd("segs", {"d": segment(first).to_wire()})
        wait_for(lambda: dumper.has_event("segment_written"), 30, "the segment to be written")
        client.xadd("segs", {"d": segment(second).to_wire()})  # the redelivery, encoded again
        wait_for(lambda: dumper.has_event("segment_duplicate_skipped"), 30, "the redelivery to be recognised")
    finally:
        client.close()
    assert dumper.terminate() == 0

    save_dir = tmp_path / "out"
    assert sorted(p.name for p in save_dir.iterdir() if p.suffix in (".mp4", ".json")) == [
        "cam_20260124_112900_500000.json",
        "cam_20260124_112900_500000.mp4",
    ]
    [(video, meta)] = segments_on_disk(save_dir)
    assert video.read_bytes() == first and probe_video(video).frame_count == 5
    assert meta["first_capture_time"] == "2026-01-24T11:29:00.500000+00:00" and meta["time_zone"] == "UTC"
