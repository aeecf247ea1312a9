"""Passthrough recording end to end: a real RTSP camera, the three launch commands (camera node with
``--frame-encoding packets``), a real redis-server; the files on disk are checked byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from msightd.bus.streams import PAYLOAD_FIELD
from msightd.messages import PacketMessage, decode_frame, decode_packet
from testbed.waiting import wait_for
from tests.integration.pipeline import launch, segments_on_disk, start_consumers
from tests.support.clips import (
    file_pictures,
    framemd5,
    mp4_sample_md5,
    passthrough_clips,
    pictures,
    serve_files,
)
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint, keep_every_entry
from tests.support.video import probe_video

STREAM = ("--transport", "stream")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return passthrough_clips(tmp_path_factory.mktemp("clips"))


def start_camera_node(
    processes: list[Proc], tmp_path: Path, url: str, camera_url: str, outputs: tuple[str, ...] = ()
) -> Proc:
    """The camera node; by default it publishes packets to rtsp_images (what the aggregator reads). Its
    topics keep every entry (acknowledged entries are trimmed otherwise): the tests read them all back."""
    outputs = outputs or ("-pt", "rtsp_images", "--frame-encoding", "packets")
    for topic in ("rtsp_images", "perception_frames"):
        keep_every_entry(url, topic)
    return launch(
        processes,
        tmp_path,
        "rtsp",
        [
            "msight_launch_rtsp", "-n", "rtsp_node", "-u", camera_url, "--sensor-name", "cam",
            "--read-timeout", "1", *outputs, *STREAM,
        ],
        url,
    )  # fmt: skip


def stop_all(source: Proc, aggregator: Proc, dumper: Proc, save_dir: Path) -> None:
    """Camera first, then the aggregator (which publishes its open segment), then the dumper."""
    assert source.terminate() == 0
    written = len(segments_on_disk(save_dir))
    assert aggregator.terminate() == 0
    wait_for(lambda: len(segments_on_disk(save_dir)) > written or None, 30, "the last segment")
    assert dumper.terminate() == 0


def stream_payloads(redis_url: str, topic: str) -> list[bytes]:
    """Every message published to ``topic`` (read back from its stream)."""
    client = redis.Redis.from_url(redis_url)
    try:
        entries: Any = client.xrange(topic)
    finally:
        client.close()
    return [fields[PAYLOAD_FIELD] for _entry_id, fields in entries]


def published_packets(redis_url: str) -> dict[int, PacketMessage]:
    """Every packet the camera node published, by frame id."""
    messages = [decode_packet(payload) for payload in stream_payloads(redis_url, "rtsp_images")]
    return {m.frame_id: m for m in messages}


def check_segment(video: Path, meta: dict[str, Any], packets: dict[int, PacketMessage]) -> list[PacketMessage]:
    """The file holds exactly the published packets its JSON names, byte for byte, starting on a
    keyframe, and decodes back to as many frames at the size the JSON states."""
    held = [packets[frame["frame_id"]] for frame in meta["frames"]]
    assert framemd5(video) == [mp4_sample_md5(p.data) for p in held]
    assert held[0].keyframe
    info = probe_video(video)
    assert info.frame_count == meta["frame_count"] == len(held)
    assert (info.width, info.height, info.codec) == (meta["width"], meta["height"], meta["codec"])
    assert {(p.width, p.height) for p in held} == {(meta["width"], meta["height"])}
    return held


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_camera_stream_is_stored_bit_exact_in_keyframe_aligned_segments(
    codec: str, clips: dict[str, Path], redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    url = redis_server.url
    save_dir = tmp_path / "received_videos"
    with serve_files([clips[codec]]) as server:
        dumper, aggregator = start_consumers(processes, tmp_path, url, buffer=25, overlap=0, extra_args=STREAM)
        source = start_camera_node(processes, tmp_path, url, server.url)
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 3, 60, "three segments on disk")
        stop_all(source, aggregator, dumper, save_dir)
    packets = published_packets(url)
    source_pictures = file_pictures(clips[codec], codec)
    recorded: list[int] = []
    segments = segments_on_disk(save_dir)
    for index, (video, meta) in enumerate(segments):
        held = check_segment(video, meta, packets)
        assert meta["codec"] == codec and (meta["width"], meta["height"]) == (640, 480)
        if index < len(segments) - 1:
            # GOP 10, --buffer-size 25: a segment closes at the first keyframe at or after 25 frames
            assert len(held) == 30 and meta["fps"] == pytest.approx(10.0, rel=0.02)
        # the pictures are the encoder's own, in the clip's order (the server loops the 30-frame clip)
        positions = [source_pictures.index(pictures(codec, p.data)) for p in held]
        assert positions == [(positions[0] + n) % len(source_pictures) for n in range(len(held))]
        recorded += [frame["frame_id"] for frame in meta["frames"]]
    first_keyframe = next(i for i, p in enumerate(packets.values()) if p.keyframe)
    assert recorded == list(packets)[first_keyframe:], "every packet from the first keyframe on, once, in order"


def test_resolution_change_and_camera_outage_close_segments_leaving_valid_files(
    clips: dict[str, Path], redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    url = redis_server.url
    save_dir = tmp_path / "received_videos"
    with serve_files([clips["h264"], clips["h264_small"]]) as server:  # 640x480 for 3 s, then 320x240 for 3 s
        dumper, aggregator = start_consumers(processes, tmp_path, url, buffer=100, overlap=0, extra_args=STREAM)
        source = start_camera_node(processes, tmp_path, url, server.url)
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 2, 60, "segments cut by the size changes")
        server.restart()  # the camera goes away mid-segment and comes back on the same URL
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 4, 60, "segments after the outage")
        stop_all(source, aggregator, dumper, save_dir)
    packets = published_packets(url)
    segments = segments_on_disk(save_dir)
    for video, meta in segments:
        check_segment(video, meta, packets)
    assert {(meta["width"], meta["height"]) for _video, meta in segments} == {(640, 480), (320, 240)}
    reasons = {event["reason"] for event in aggregator.events() if event.get("event") == "segment_cut_short"}
    assert {"stream_changed", "discontinuity"} <= reasons


def test_one_camera_connection_feeds_perception_frames_and_passthrough_recording(
    clips: dict[str, Path], redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    """--packet-topic: the camera's packets are recorded as they are, and the same packets, decoded,
    go out as JPEG frames for perception consumers."""
    url = redis_server.url
    save_dir = tmp_path / "received_videos"
    with serve_files([clips["h264"]]) as server:
        dumper, aggregator = start_consumers(processes, tmp_path, url, buffer=25, overlap=0, extra_args=STREAM)
        outputs = ("-pt", "perception_frames", "--frame-encoding", "jpeg", "--packet-topic", "rtsp_images")
        source = start_camera_node(processes, tmp_path, url, server.url, outputs)
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 2, 60, "two segments on disk")
        stop_all(source, aggregator, dumper, save_dir)
    packets = published_packets(url)
    for video, meta in segments_on_disk(save_dir):
        check_segment(video, meta, packets)
    frames = [decode_frame(payload) for payload in stream_payloads(url, "perception_frames")]
    # the decoder holds back a few B-frames at the end; every other packet became a picture
    assert len(packets) - 5 <= len(frames) <= len(packets)
    for frame in frames[:: max(1, len(frames) // 10)]:
        image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == frame.size == (480, 640, 3)
    stopped = source.has_event("source_stopped")[0]
    assert (stopped["frames_published"], stopped["packets_published"]) == (len(frames), len(packets))
