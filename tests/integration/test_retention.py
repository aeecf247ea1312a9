"""Retention and the catalog on real filesystems, with real launch commands: the save dir stays under its cap,
a small disk is recorded on far past its size without a write error, kill -9 in the middle of a deletion
round leaves no half pair, and a deleted or corrupt catalog is rebuilt to the same listing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from msightd.storage.catalog import catalog_path
from msightd.storage.metadata import metadata_bytes
from testbed.ports import free_port
from testbed.waiting import wait_for
from tests.integration.recorder import (
    listing,
    noise_clip,
    segments_cli,
    start_dumper,
    start_recorder,
    stop_all,
    written,
)
from tests.integration.test_observability import scrape, total
from tests.support.filesystems import small_filesystem
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint
from tests.support.segments import segment_message

DAY_S = 86400.0


def pair_bytes(save_dir: Path) -> int:
    """Bytes of the segment files (MP4 + JSON) in ``save_dir`` right now (files may vanish meanwhile)."""
    size = 0
    for entry in os.scandir(save_dir):
        if entry.name.endswith((".mp4", ".json")) and not entry.name.startswith("."):
            try:
                size += entry.stat().st_size
            except FileNotFoundError:
                continue
    return size


def half_pairs(save_dir: Path) -> tuple[list[str], list[str]]:
    """(JSONs without their MP4: what must never exist, MP4s without their JSON: incomplete, swept later)."""
    jsons = {path.stem for path in save_dir.glob("*.json")}
    videos = {path.stem for path in save_dir.glob("*.mp4")}
    return sorted(jsons - videos), sorted(videos - jsons)


def test_retain_max_size_keeps_the_save_dir_under_its_cap_over_30_segments(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    save_dir, cap, port = tmp_path / "videos", 1_000_000, free_port()
    dumper = start_dumper(
        processes, tmp_path, redis_server.url, save_dir, "--retain-max-size", "1MB", "--metrics-port", str(port)
    )
    start_recorder(processes, tmp_path, redis_server.url, noise_clip(tmp_path / "noise.mp4"), dumper)
    peak = 0

    def watch() -> bool:
        nonlocal peak
        if save_dir.exists():
            peak = max(peak, pair_bytes(save_dir))
        return written(dumper) >= 35

    wait_for(watch, 120, "35 segments written", interval_s=0.02)
    samples = scrape(port)
    stop_all(processes)
    largest = max(event["size_bytes"] for event in dumper.has_event("segment_written")) + 4096  # + its JSON
    at_rest = pair_bytes(save_dir)
    count = written(dumper)
    remaining = len(list(save_dir.glob("*.json")))
    print(f"\nretain_max_size 1MB: {count} segments written, {remaining} kept, {at_rest} bytes, peak {peak}")
    assert at_rest <= cap, "at rest, under the cap"
    assert peak <= cap + largest, "at most the segment just written over the cap, deleted right after it"
    deleted = sum(event["segments"] for event in dumper.has_event("segments_deleted"))
    assert deleted == count - remaining and {event["reason"] for event in dumper.has_event("segments_deleted")} == {
        "size"
    }
    assert total(samples, "msightd_segments_deleted_total", reason="size") > 0
    assert total(samples, "msightd_write_errors_total") == 0
    assert half_pairs(save_dir) == ([], [])
    assert [row["video_file"] for row in listing(save_dir)] == sorted(p.name for p in save_dir.glob("*.mp4"))
    assert segments_cli("verify", "--save-dir", str(save_dir)).returncode == 0


def test_min_free_space_records_far_past_the_size_of_a_small_disk_without_a_write_error(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    disk_bytes, port = 2 << 20, free_port()
    with small_filesystem(tmp_path / "disk", disk_bytes) as disk:
        save_dir = disk / "videos"
        dumper = start_dumper(
            processes, tmp_path, redis_server.url, save_dir, "--min-free-space", "512KiB", "--metrics-port", str(port)
        )
        start_recorder(processes, tmp_path, redis_server.url, noise_clip(tmp_path / "noise.mp4"), dumper)
        wait_for(
            lambda: total(scrape(port), "msightd_written_bytes_total") > 2.5 * disk_bytes,
            180,
            "2.5 times the disk's size written",
            interval_s=0.5,
        )
        samples = scrape(port)
        stop_all(processes)
        statvfs = os.statvfs(save_dir)
        free = statvfs.f_bavail * statvfs.f_frsize
        print(
            f"\nmin_free_space 512KiB on a 2 MiB tmpfs: {written(dumper)} segments written, {free} bytes free at rest"
        )
        assert dumper.has_event("segment_write_failed") == [] and total(samples, "msightd_write_errors_total") == 0
        assert total(samples, "msightd_segments_deleted_total", reason="free_space") > 0
        assert free >= 512 << 10, "retention keeps the floor"
        assert total(samples, "msightd_storage_used_bytes") > 0 and total(samples, "msightd_storage_free_bytes") > 0
        assert half_pairs(save_dir) == ([], [])


def write_old_pairs(save_dir: Path, per_sensor: int, sensors: tuple[str, ...]) -> None:
    """Valid, tiny pairs captured days ago (their MP4s old enough to be swept when orphaned), written fast."""
    save_dir.mkdir(parents=True, exist_ok=True)
    start = time.time() - 30 * DAY_S
    old = time.time() - 7200
    for index in range(per_sensor):
        for sensor in sensors:
            stamps = [start + index * 10 + i * 0.1 for i in range(5)]
            message = segment_message(sensor, stamps, b"v" * 64)
            stem = f"{sensor}_{index:06d}_20260101_000000_000000"
            video = save_dir / f"{stem}.mp4"
            video.write_bytes(message.video)
            os.utime(video, (old, old))
            (save_dir / f"{stem}.json").write_bytes(
                metadata_bytes(message, video.name, "0" * 64)  # a hash nobody checks here
            )


def test_kill_9_in_the_middle_of_a_deletion_round_leaves_no_half_pair(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    save_dir = tmp_path / "videos"
    write_old_pairs(save_dir, per_sensor=3000, sensors=("cam_a", "cam_b"))
    before = len(list(save_dir.glob("*.json")))
    dumper = start_dumper(processes, tmp_path, redis_server.url, save_dir, "--retain-days", "1")

    def deleting() -> bool:
        if dumper.process.poll() is not None:
            raise AssertionError(f"the dumper exited: {dumper.text()[-2000:]}")
        return sum(1 for name in os.listdir(save_dir) if name.endswith(".json")) < before

    wait_for(deleting, 120, "the first deletion round", interval_s=0.001)
    os.kill(dumper.pid, signal.SIGKILL)
    dumper.wait(10)
    whole_less, incomplete = half_pairs(save_dir)
    left = len(list(save_dir.glob("*.json")))
    print(f"\nkill -9 mid-round: {before - left} of {before} pairs deleted, {len(incomplete)} lone MP4s left")
    assert whole_less == [], "a JSON (the mark of a complete pair) never outlives its MP4"
    assert left > 2, "killed while rounds were still deleting (the test proves nothing otherwise)"

    again = start_dumper(processes, tmp_path, redis_server.url, save_dir, "--retain-days", "1", name="again")
    wait_for(lambda: len(list(save_dir.glob("*.json"))) == 2, 120, "retention to finish after the restart")
    wait_for(lambda: half_pairs(save_dir) == ([], []), 30, "lone MP4s to be swept")
    assert again.has_event("catalog_reconciled"), "the catalog dropped the rows of pairs deleted before the kill"
    assert again.terminate() == 0
    assert sorted(row["stem"] for row in listing(save_dir)) == sorted(p.stem for p in save_dir.glob("*.json"))
    assert sorted(p.stem for p in save_dir.glob("*.json")) == [
        "cam_a_002999_20260101_000000_000000",
        "cam_b_002999_20260101_000000_000000",
    ], "each sensor keeps its newest pair"


def test_a_deleted_or_corrupt_catalog_is_rebuilt_by_the_dumper_to_the_same_listing(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    save_dir = tmp_path / "videos"
    write_old_pairs(save_dir, per_sensor=40, sensors=("cam_a", "cam_b"))

    def run_dumper(name: str) -> Proc:
        dumper = start_dumper(processes, tmp_path, redis_server.url, save_dir, name=name)
        wait_for(lambda: dumper.has_event("node_ready"), 60, "the dumper")
        assert dumper.terminate() == 0
        return dumper

    assert run_dumper("first").has_event("catalog_rebuilt")[0]["segments"] == 80
    reference = listing(save_dir)
    assert len(reference) == 80
    path = catalog_path(save_dir)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert run_dumper("after_deletion").has_event("catalog_rebuilt")[0]["segments"] == 80
    assert listing(save_dir) == reference
    path.write_bytes(b"\x00garbage" * 2048)
    rebuilt = run_dumper("after_corruption")
    assert rebuilt.has_event("catalog_corrupt")[0]["level"] == "error"
    assert rebuilt.has_event("catalog_rebuilt")[0]["segments"] == 80
    assert listing(save_dir) == reference
