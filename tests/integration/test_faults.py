"""Fault injection against real processes: crashes, a broker restart, malformed floods, a full disk.

Each test prints the figures the README's reliability section reports (run with ``-s`` to see them).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import redis

from msightd.messages import decode_frame
from msightd.storage.catalog import CATALOG_DIR
from testbed.waiting import wait_for
from tests.integration.daemon import pipeline_toml, running_daemon, shipped_frames
from tests.integration.pipeline import launch, segments_on_disk
from tests.integration.test_observability import scrape, total
from tests.support.filesystems import small_filesystem
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint, keep_every_entry
from tests.support.video import probe_video


def published_frame_ids(redis_url: str, topic: str) -> list[int]:
    """Frame ids the broker accepted on a stream topic (what the pipeline owes to disk); the topic needs
    an audit group (:func:`keep_every_entry`), or entries every consumer acknowledged are trimmed."""
    client = redis.Redis.from_url(redis_url)
    try:
        return [decode_frame(fields[b"d"]).frame_id for _, fields in client.xrange(topic)]
    finally:
        client.close()


def stream_length(redis_url: str, topic: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xlen(topic))
    finally:
        client.close()


def assert_complete_segments(save_dir: Path) -> list[tuple[Path, dict[str, object]]]:
    segments = segments_on_disk(save_dir)
    for video, meta in segments:
        assert probe_video(video).frame_count == meta["frame_count"], f"{video.name} is partial"
    leftovers = [p.name for p in save_dir.iterdir() if p.suffix not in (".mp4", ".json") and p.name != CATALOG_DIR]
    assert not leftovers, f"temp files left behind: {leftovers}"
    assert len(list(save_dir.glob("*.mp4"))) == len(segments), "an MP4 without its JSON"
    return segments


#: JPEG frames (MSight's), and the shipped settings (shared-memory frames decoded by PyAV), whose frames
#: live in a ring that outlives a killed node.
FRAMES = {"jpeg": lambda tmp_path: "", "shm+pyav": lambda tmp_path: shipped_frames(tmp_path / "shm")}


@pytest.mark.parametrize("frames", FRAMES)
def test_repeated_kill_9_of_every_node_loses_and_duplicates_nothing(
    redis_server: RedisEndpoint, sample_video: Path, tmp_path: Path, processes: list[Proc], frames: str
) -> None:
    def config(save_dir: Path, port: int) -> str:
        options = FRAMES[frames](tmp_path)
        return pipeline_toml(sample_video, save_dir, port, buffer_size=20, redis_url=redis_server.url, defaults=options)

    keep_every_entry(redis_server.url, "rtsp_images")
    rounds = 2 if frames == "jpeg" else 1
    victims = ["image_aggregator", "video_dumper", "rtsp_node"] * rounds
    recoveries = []
    with running_daemon(config, tmp_path, processes) as daemon:
        wait_for(lambda: segments_on_disk(tmp_path / "videos"), 60, "a first segment")
        for victim in victims:
            old_pid = daemon.nodes()[victim]["pid"]
            os.kill(old_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(
                lambda v=victim, o=old_pid: (
                    daemon.nodes()[v]["state"] == "running"  # type: ignore[misc]
                    and daemon.nodes()[v]["pid"] != o
                ),
                60,
                f"{victim} to come back",
            )
            recoveries.append(time.monotonic() - killed_at)
            time.sleep(2.5)
        restarts = {name: node["restarts"] for name, node in daemon.nodes().items()}
        daemon.proc.process.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(90) == 0
        assert bool(daemon.proc.has_event("frame_ring_opened")) == (frames != "jpeg")
    assert restarts == dict.fromkeys(("rtsp_node", "image_aggregator", "video_dumper"), rounds)

    published = published_frame_ids(redis_server.url, "rtsp_images")
    segments = assert_complete_segments(tmp_path / "videos")
    in_segments = [frame["frame_id"] for _, meta in segments for frame in meta["frames"]]  # type: ignore[attr-defined]
    lost = set(published) - set(in_segments)
    duplicated = len(in_segments) - len(set(in_segments))
    print(
        f"\nkill -9 x{len(victims)} ({frames}): {len(published)} frames published, {len(segments)} segments, "
        f"{len(lost)} frames lost, {duplicated} duplicated, recovery {min(recoveries):.1f}-{max(recoveries):.1f} s"
    )
    assert not lost, f"{len(lost)} published frames are in no segment"
    assert duplicated == 0, "a frame is in two segments"
    assert set(in_segments) <= set(published)
    held = stream_length(redis_server.url, "aggregated_video")
    assert held <= 1, f"the broker still holds {held} of {len(segments)} written (acknowledged) segments"


@pytest.mark.parametrize("frames", FRAMES)
def test_broker_restart_mid_run_is_survived_without_a_crash(
    redis_server: RedisEndpoint, sample_video: Path, tmp_path: Path, processes: list[Proc], frames: str
) -> None:
    def config(save_dir: Path, port: int) -> str:
        options = FRAMES[frames](tmp_path)
        return pipeline_toml(sample_video, save_dir, port, buffer_size=20, redis_url=redis_server.url, defaults=options)

    with running_daemon(config, tmp_path, processes) as daemon:
        save_dir = tmp_path / "videos"
        wait_for(lambda: segments_on_disk(save_dir), 60, "a first segment")
        pids = {name: node["pid"] for name, node in daemon.nodes().items()}
        redis_server.stop()
        down_at = time.monotonic()
        time.sleep(5)
        redis_server.start()
        count = len(segments_on_disk(save_dir))
        wait_for(lambda: len(segments_on_disk(save_dir)) >= count + 2, 90, "segments after the broker came back")
        print(
            f"\nbroker down 5 s ({frames}): segments resumed {time.monotonic() - down_at - 5:.1f} s after it was back"
        )
        assert {name: node["pid"] for name, node in daemon.nodes().items()} == pids, "no node crashed"
        events = daemon.proc.events()
        assert [e for e in events if e["event"] == "bus_disconnected"]
        assert [e for e in events if e["event"] == "bus_reconnected"]
        assert [e for e in events if e["event"] == "bus_group_recreated"], "a real restart: the broker came back empty"
        assert bool(daemon.proc.has_event("frame_ring_opened")) == (frames != "jpeg")
        daemon.proc.process.send_signal(signal.SIGTERM)  # compare files at rest, not mid-write
        assert daemon.proc.wait(90) == 0
    assert_complete_segments(save_dir)


def test_a_flood_of_malformed_messages_is_counted_and_survived(
    redis_server: RedisEndpoint, sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    config = lambda d, p: pipeline_toml(sample_video, d, p, buffer_size=20, redis_url=redis_server.url)  # noqa: E731
    junk = [
        b"",
        b"\xc1",
        os.urandom(300),
        msgpack.packb([1, 2]),
        msgpack.packb({"data_type": "x"}),
        msgpack.packb({"data_type": "msight_core.data.image.ImageData", "sensor_name": 5}),
        msgpack.packb({"data_type": "msight_core.data.video.VideoData", "frame_ids": "x"}),
    ]
    with running_daemon(config, tmp_path, processes) as daemon:
        wait_for(lambda: segments_on_disk(tmp_path / "videos"), 60, "a first segment")
        pids = {name: node["pid"] for name, node in daemon.nodes().items()}
        client = redis.Redis.from_url(redis_server.url)
        for i in range(1000):
            for topic in ("rtsp_images", "aggregated_video"):
                client.xadd(topic, {"d": junk[i % len(junk)]}, maxlen=1000, approximate=True)
        client.close()
        count = len(segments_on_disk(tmp_path / "videos"))
        wait_for(lambda: len(segments_on_disk(tmp_path / "videos")) >= count + 2, 60, "segments after the flood")
        samples = scrape(daemon.metrics_port)
        assert total(samples, "msightd_malformed_messages_total", node="image_aggregator") == 1000
        assert total(samples, "msightd_malformed_messages_total", node="video_dumper") == 1000
        assert {name: node["pid"] for name, node in daemon.nodes().items()} == pids, "no node crashed"
        lines = daemon.proc.has_event("malformed_message")
        print(f"\n2000 malformed messages: {len(lines)} log lines, 0 crashes")
        assert 2 <= len(lines) <= 40, "one line per topic and reason, then rate-limited"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real file system that really fills up (mounting needs root)."""
    with small_filesystem(tmp_path / "tiny", 4 << 20) as mount_point:
        yield mount_point


def test_a_full_disk_keeps_segments_until_there_is_room(
    redis_server: RedisEndpoint, sample_video: Path, tiny_disk: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    url = redis_server.url
    save_dir = tiny_disk / "videos"
    filler = tiny_disk / "filler"
    dumper = launch(
        processes,
        tmp_path,
        "dumper",
        [
            "msight_launch_video_local_dumper",
            "-n",
            "dumper",
            "-st",
            "segs",
            "--save-dir",
            str(save_dir),
            "--transport",
            "stream",
        ],
        url,
    )
    launch(
        processes,
        tmp_path,
        "aggregator",
        [
            "msight_launch_image_to_video_aggregator",
            "-n",
            "agg",
            "-st",
            "frames",
            "-pt",
            "segs",
            "--buffer-size",
            "20",
            "--transport",
            "stream",
        ],
        url,
    )
    wait_for(lambda: dumper.has_event("node_ready"), 60, "the dumper")
    with filler.open("wb") as file:  # leave almost nothing free
        try:
            while True:
                file.write(b"\0" * 65536)
        except OSError:
            pass
    launch(
        processes,
        tmp_path,
        "rtsp",
        [
            "msight_launch_rtsp",
            "-n",
            "cam",
            "-u",
            str(sample_video),
            "-pt",
            "frames",
            "--sensor-name",
            "c1",
            "--loop",
            "--transport",
            "stream",
        ],
        url,
    )
    wait_for(lambda: dumper.has_event("segment_write_failed"), 60, "the full disk to be reported")
    failures = dumper.has_event("segment_write_failed")
    assert len(failures) == 1, "one line per outage"
    assert "No space left on device" in failures[0]["msg"] and "free space" in failures[0]["msg"]
    time.sleep(3)
    assert not segments_on_disk(save_dir), "nothing written while full"
    assert [p.name for p in save_dir.iterdir() if p.name != CATALOG_DIR] == [], "no partial file, no temp file left"
    filler.unlink()
    wait_for(lambda: dumper.has_event("segment_writes_recovered"), 60, "writes to resume")
    wait_for(lambda: len(segments_on_disk(save_dir)) >= 3, 60, "the kept segments to be written")
    for proc in processes:  # source, aggregator, dumper: stop in pipeline order, then look at rest
        if proc.args[0].endswith("msight_launch_rtsp"):
            assert proc.terminate() == 0
    for name in ("msight_launch_image_to_video_aggregator", "msight_launch_video_local_dumper"):
        for proc in processes:
            if proc.args[0].endswith(name):
                assert proc.terminate() == 0
    segments = assert_complete_segments(save_dir)
    ids = [f["frame_id"] for _, meta in segments for f in meta["frames"]]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    print(f"\nfull disk: {len(segments)} segments written after space came back, none lost or partial")
    shutil.rmtree(save_dir, ignore_errors=True)


def test_source_backlog_bridges_a_broker_outage_in_capture_order_keeping_the_newest(
    persistent_redis_server: RedisEndpoint, sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    """The broker keeps an append-only file, so after the outage it holds every frame ever published: the
    camera's frames must be there in capture order, with one gap, the oldest frames of the outage, of
    exactly the size reported."""
    redis_server = persistent_redis_server
    source = launch(
        processes,
        tmp_path,
        "rtsp",
        ["msight_launch_rtsp", "-n", "cam", "-u", str(sample_video), "-pt", "frames", "--sensor-name", "c1",
         "--loop", "--transport", "stream", "--backlog-frames", "15"],
        redis_server.url,
    )  # fmt: skip
    wait_for(lambda: len(source.has_event("frame_captured")) >= 10, 60, "frames to flow")
    redis_server.stop()
    wait_for(lambda: source.has_event("publish_failed"), 30, "the outage to be noticed")
    time.sleep(4)  # ~40 frames at 10 fps: more than the 15-frame backlog holds
    redis_server.start()
    overflow = wait_for(lambda: source.has_event("backlog_overflowed"), 60, "the drop count once the broker is back")
    dropped = overflow[0]["dropped_frames"]
    captured_before = len(source.has_event("frame_captured"))
    wait_for(lambda: len(source.has_event("frame_captured")) >= captured_before + 10, 30, "frames after the outage")
    assert source.process.poll() is None, "the node never exits over the broker"
    assert source.terminate() == 0

    events = source.events()
    captured = [e["frame_id"] for e in events if e["event"] == "frame_captured"]
    first_failure = next(i for i, e in enumerate(events) if e["event"] == "publish_failed")
    outage_start = sum(e["event"] == "frame_captured" for e in events[:first_failure]) - 1  # the frame that failed
    client = redis.Redis.from_url(redis_server.url)
    try:
        frames = [decode_frame(fields[b"d"]) for _, fields in client.xrange("frames")]
    finally:
        client.close()
    published = [frame.frame_id for frame in frames]
    stamps = [frame.capture_timestamp for frame in frames]
    print(f"\nbroker down ~4 s with a 15-frame backlog: {dropped} oldest frames dropped and reported, rest in order")
    assert dropped >= 10
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "published in capture order"
    assert published == captured[:outage_start] + captured[outage_start + dropped :], (
        "everything but the oldest frames of the outage, in capture order"
    )
