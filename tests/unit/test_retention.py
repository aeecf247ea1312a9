from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from msightd.storage.catalog import SegmentCatalog, SegmentRecord, record_from_metadata
from msightd.storage.retention import (
    DAY_S,
    Deletion,
    DiskUsage,
    RetentionPolicy,
    SegmentDeleter,
    plan_deletions,
    remove_orphan_videos,
)
from msightd.storage.sizes import SpaceFloor
from tests.support.segments import write_segment

NOW = 1_780_000_000.0
PLENTY = DiskUsage(total_bytes=10**12, free_bytes=10**12)


def record(sensor: str, age_days: float, size: int = 100, uploaded: bool = False, index: int = 0) -> SegmentRecord:
    start = NOW - age_days * DAY_S
    return SegmentRecord(
        stem=f"{sensor}_{index:03d}",
        sensor_name=sensor,
        video_file=f"{sensor}_{index:03d}.mp4",
        metadata_file=f"{sensor}_{index:03d}.json",
        first_capture_timestamp=start,
        last_capture_timestamp=start + 9.9,
        frame_count=100,
        video_size_bytes=size - 10,
        metadata_size_bytes=10,
        video_sha256="0" * 64,
        codec="h264",
        width=4,
        height=4,
        fps=10.0,
        written_at=start + 10,
        uploaded_at=start + 20 if uploaded else None,
    )


def history(sensor: str, days: int, uploaded: bool = False) -> list[SegmentRecord]:
    """One 100-byte pair per day, oldest first (``days`` pairs, the newest 0 days old)."""
    return [record(sensor, age, uploaded=uploaded, index=days - age) for age in range(days - 1, -1, -1)]


def stems(plan_deletions_result: list[Deletion]) -> list[str]:
    return [deletion.record.stem for deletion in plan_deletions_result]


def test_age_deletes_pairs_whose_last_frame_is_older_than_retain_days() -> None:
    records = history("cam", 10)
    plan = plan_deletions(records, RetentionPolicy(retain_days=7.5), PLENTY, NOW)
    assert stems(plan.deletions) == [r.stem for r in records[:2]]  # 9 and 8 days old; 7 days + 9.9 s is kept
    assert {d.reason for d in plan.deletions} == {"age"}


def test_size_deletes_the_oldest_until_the_total_fits_across_sensors() -> None:
    records = history("a", 5) + history("b", 5)  # 1000 bytes
    plan = plan_deletions(records, RetentionPolicy(retain_max_size=650), PLENTY, NOW)
    # oldest first by first capture regardless of sensor: a4 b4 (4 days), a3 b3 (3 days) -> 600 bytes left
    assert sorted(stems(plan.deletions)) == ["a_001", "a_002", "b_001", "b_002"]
    assert {d.reason for d in plan.deletions} == {"size"}


def test_a_sensors_newest_pair_is_never_deleted_even_over_every_limit() -> None:
    records = [record("quiet", 30, index=1), *history("busy", 3)]
    policy = RetentionPolicy(retain_days=1, retain_max_size=1, min_free_space=SpaceFloor(size_bytes=10**15))
    plan = plan_deletions(records, policy, PLENTY, NOW)
    assert stems(plan.deletions) == ["busy_001", "busy_002"]
    assert plan.free_space_shortfall_bytes > 0


def test_protected_stems_are_never_planned() -> None:
    records = history("cam", 5)
    plan = plan_deletions(records, RetentionPolicy(retain_days=0.5), PLENTY, NOW, protected_stems={"cam_002"})
    assert "cam_002" not in stems(plan.deletions) and len(plan.deletions) == 3


def test_free_space_deletes_the_oldest_until_the_floor_is_reached() -> None:
    records = history("cam", 6)
    usage = DiskUsage(total_bytes=10_000, free_bytes=750)
    plan = plan_deletions(records, RetentionPolicy(min_free_space=SpaceFloor(fraction=0.1)), usage, NOW)
    assert stems(plan.deletions) == ["cam_001", "cam_002", "cam_003"]  # 750 + 300 >= 1000
    assert {d.reason for d in plan.deletions} == {"free_space"} and plan.free_space_shortfall_bytes == 0


def test_free_space_counts_what_age_and_size_already_free() -> None:
    records = history("cam", 6)
    usage = DiskUsage(total_bytes=10_000, free_bytes=800)
    policy = RetentionPolicy(retain_days=4.5, min_free_space=SpaceFloor(size_bytes=1000))
    plan = plan_deletions(records, policy, usage, NOW)
    assert [(d.record.stem, d.reason) for d in plan.deletions] == [("cam_001", "age"), ("cam_002", "free_space")]


def test_with_an_uploader_pairs_not_uploaded_are_safe_from_age_and_size() -> None:
    records = history("cam", 6)
    uploaded = {r.stem for r in records[:2]}
    records = [record("cam", 5 - i, uploaded=r.stem in uploaded, index=i + 1) for i, r in enumerate(records)]
    policy = RetentionPolicy(retain_days=0.5, retain_max_size=100)
    plan = plan_deletions(records, policy, PLENTY, NOW, uploads_required=True)
    assert stems(plan.deletions) == ["cam_001", "cam_002"]
    without_uploader = plan_deletions(records, policy, PLENTY, NOW, uploads_required=False)
    assert len(without_uploader.deletions) == 5


def test_the_free_space_floor_takes_uploaded_pairs_first_then_not_uploaded_as_such() -> None:
    old_not_uploaded = record("cam", 5, index=1)
    uploaded = [record("cam", age, uploaded=True, index=6 - age) for age in (4, 3)]
    new_not_uploaded = [record("cam", age, index=6 - age) for age in (2, 1, 0)]
    records = [old_not_uploaded, *uploaded, *new_not_uploaded]
    usage = DiskUsage(total_bytes=10_000, free_bytes=0)
    plan = plan_deletions(
        records, RetentionPolicy(min_free_space=SpaceFloor(size_bytes=350)), usage, NOW, uploads_required=True
    )
    assert [(d.record.stem, d.reason) for d in plan.deletions] == [
        ("cam_001", "free_space_not_uploaded"),
        ("cam_002", "free_space"),
        ("cam_003", "free_space"),
        ("cam_004", "free_space_not_uploaded"),
    ]


def test_nothing_to_do_within_limits_or_without_a_policy() -> None:
    records = history("cam", 3)
    assert plan_deletions(records, RetentionPolicy(), PLENTY, NOW).deletions == []
    assert not RetentionPolicy().enabled
    policy = RetentionPolicy(retain_days=30, retain_max_size=10**9, min_free_space=SpaceFloor(fraction=0.05))
    assert plan_deletions(records, policy, PLENTY, NOW).deletions == []


def test_policy_from_option_values() -> None:
    policy = RetentionPolicy.parse(7, "500GB", "10%")
    assert policy == RetentionPolicy(7, 500 * 10**9, SpaceFloor(fraction=0.1))
    assert policy.describe() == "retain_days=7, retain_max_size=500 GB, min_free_space=10%"
    with pytest.raises(ValueError, match="retain_days must be > 0"):
        RetentionPolicy.parse(0, None, None)
    with pytest.raises(ValueError, match="retain_max_size"):
        RetentionPolicy.parse(None, "big", None)
    with pytest.raises(ValueError, match="min_free_space"):
        RetentionPolicy.parse(None, None, "110%")


def test_the_deleter_removes_whole_pairs_and_rows_and_logs_one_line(tmp_path: Path) -> None:
    written = [write_segment(tmp_path, "cam", NOW + 10 * i, video=b"v" * 1000) for i in range(4)]
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        doomed = [Deletion(record_from_metadata(w.metadata_path), "size") for w in written[:3]]
        with capture_logs() as logs:
            result = SegmentDeleter(tmp_path, catalog, structlog.get_logger()).delete(doomed)
        assert [r.stem for r in catalog.segments()] == [written[3].metadata_path.stem]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".msightd", written[3].video_path.name, written[3].metadata_path.name]
    )
    assert result.segments == {"size": 3} and result.total_bytes == sum(d.record.size_bytes for d in doomed)
    assert len(logs) == 1 and logs[0]["event"] == "segments_deleted" and logs[0]["log_level"] == "info"
    assert logs[0]["segments"] == 3 and logs[0]["reason"] == "size" and logs[0]["size_bytes"] == result.total_bytes


def test_deleting_pairs_not_uploaded_is_logged_as_an_error(tmp_path: Path) -> None:
    written = write_segment(tmp_path, "cam", NOW, video=b"v")
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog, capture_logs() as logs:
        deletion = Deletion(record_from_metadata(written.metadata_path), "free_space_not_uploaded")
        SegmentDeleter(tmp_path, catalog, structlog.get_logger()).delete([deletion], emergency=True)
    assert logs[0]["log_level"] == "error" and "NOT uploaded" in logs[0]["msg"]


def test_orphan_videos_older_than_the_grace_period_are_swept(tmp_path: Path) -> None:
    whole = write_segment(tmp_path, "cam", NOW, video=b"whole")
    orphan = write_segment(tmp_path, "cam", NOW + 10, video=b"orphan")
    orphan.metadata_path.unlink()
    young = write_segment(tmp_path, "cam", NOW + 20, video=b"young")
    young.metadata_path.unlink()
    other = tmp_path / "holiday.mp4"
    other.write_bytes(b"not ours")
    old = time.time() - 3600
    for path in (orphan.video_path, other, whole.video_path):
        os.utime(path, (old, old))
    assert remove_orphan_videos(tmp_path, grace_s=60) == [orphan.video_path.name]
    assert whole.video_path.exists() and young.video_path.exists() and other.exists()
