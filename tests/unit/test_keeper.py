from __future__ import annotations

import os
import time
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from msightd.metrics import NodeMetrics
from msightd.storage.keeper import StorageKeeper
from msightd.storage.retention import RetentionPolicy
from tests.support.segments import write_segment

T0 = time.time() - 3 * 86400  # three days ago


def sample(metrics: NodeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"msightd_{name}", {"node": "dumper", **labels})


def test_a_write_over_retain_max_size_deletes_the_oldest_at_once(tmp_path: Path) -> None:
    metrics = NodeMetrics("dumper")
    keeper = StorageKeeper(tmp_path, RetentionPolicy(retain_max_size=5_000), structlog.get_logger(), metrics)
    keeper.open()
    with capture_logs() as logs:
        for index in range(8):
            written = write_segment(tmp_path, "cam", T0 + 10 * index, video=bytes(1000))
            keeper.written(written.metadata_path)
    on_disk = sum(path.stat().st_size for path in tmp_path.iterdir() if path.is_file())
    assert on_disk <= 5_000
    assert keeper.catalog is not None and keeper.catalog.totals() == (len(list(tmp_path.glob("*.json"))), on_disk)
    deleted = sample(metrics, "segments_deleted_total", reason="size")
    assert deleted == 8 - len(list(tmp_path.glob("*.json"))) and deleted >= 4
    assert sample(metrics, "storage_used_bytes") == on_disk
    assert (sample(metrics, "storage_free_bytes") or 0) > 0
    rounds = [entry for entry in logs if entry["event"] == "segments_deleted"]
    assert sum(entry["segments"] for entry in rounds) == deleted
    keeper.close()


def test_age_is_checked_on_the_housekeeping_tick(tmp_path: Path) -> None:
    for days_ago in (2.5, 1.5, 0.5):
        write_segment(tmp_path, "cam", time.time() - days_ago * 86400, video=b"x")
    metrics = NodeMetrics("dumper")
    keeper = StorageKeeper(tmp_path, RetentionPolicy(retain_days=1), structlog.get_logger(), metrics, interval_s=60)
    keeper.open()  # catalog rebuilt from the three pairs
    keeper.tick(now=100.0)
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert sample(metrics, "segments_deleted_total", reason="age") == 2
    write_segment(tmp_path, "cam", time.time() - 5 * 86400, video=b"late and old")  # reconciled, not yet due
    keeper.tick(now=130.0)
    assert len(list(tmp_path.glob("*.json"))) == 2
    keeper.close()


def test_without_retention_the_catalog_and_gauges_are_kept_and_nothing_is_deleted(tmp_path: Path) -> None:
    metrics = NodeMetrics("dumper")
    keeper = StorageKeeper(tmp_path, RetentionPolicy(), structlog.get_logger(), metrics)
    keeper.open()
    for index in range(3):
        keeper.written(write_segment(tmp_path, "cam", T0 + index, video=b"x" * 100).metadata_path)
    keeper.tick()
    assert keeper.catalog is not None and keeper.catalog.totals()[0] == 3
    assert not keeper.make_room(10**6)
    assert sample(metrics, "storage_used_bytes") == keeper.catalog.totals()[1]
    keeper.close()


def test_opening_sweeps_lone_videos_left_by_a_crash(tmp_path: Path) -> None:
    lone = write_segment(tmp_path, "cam", T0, video=b"x")
    lone.metadata_path.unlink()
    old = time.time() - 3600
    os.utime(lone.video_path, (old, old))
    keeper = StorageKeeper(tmp_path, RetentionPolicy(retain_days=30), structlog.get_logger(), NodeMetrics("dumper"))
    with capture_logs() as logs:
        keeper.open()
    assert not lone.video_path.exists()
    assert "orphan_videos_removed" in [entry["event"] for entry in logs]
    keeper.close()


def test_an_unusable_catalog_does_not_stop_recording_or_a_full_disk_round(tmp_path: Path) -> None:
    """The catalog's directory cannot be made: segments are still written (the writer does not need it),
    an emergency round reads the pairs from the JSON files, and the catalog opens once it can."""
    (tmp_path / ".msightd").write_text("in the way")
    for index in range(4):
        write_segment(tmp_path, "cam", T0 + 10 * index, video=b"x" * 100)
    metrics = NodeMetrics("dumper")
    policy = RetentionPolicy.parse(None, None, "99%")  # a floor no real disk meets: everything deletable goes
    keeper = StorageKeeper(tmp_path, policy, structlog.get_logger(), metrics)
    with capture_logs() as logs:
        assert not keeper.open()
        keeper.written(write_segment(tmp_path, "cam", T0 + 50, video=b"x").metadata_path)  # no catalog: no-op
        assert keeper.make_room(1000)
    assert [entry["event"] for entry in logs].count("catalog_update_failed") == 1, "said once"
    assert len(list(tmp_path.glob("*.json"))) == 1, "all but the newest, found in the files"
    assert sample(metrics, "segments_deleted_total", reason="free_space") == 4
    (tmp_path / ".msightd").unlink()
    keeper.tick(now=1e9)
    assert keeper.catalog is not None and keeper.catalog.totals()[0] == 1
    keeper.close()
