from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from msightd.storage.catalog import (
    CatalogCorrupt,
    MetadataError,
    SegmentCatalog,
    SegmentRecord,
    catalog_path,
    read_frames,
    record_from_metadata,
)
from tests.support.segments import write_segment

T0 = 1_780_000_000.0  # 2026-05-28, well within a day of UTC noon for readable stems


def pairs(save_dir: Path, sensors: tuple[str, ...] = ("cam_a", "cam_b"), count: int = 3) -> list[SegmentRecord]:
    """``count`` 10-frame pairs per sensor, one every 2 s, with small fake videos (no decoding here)."""
    records = []
    for index in range(count):
        for offset, sensor in enumerate(sensors):
            written = write_segment(save_dir, sensor, T0 + 2 * index + offset * 0.5, video=f"{sensor}{index}".encode())
            records.append(record_from_metadata(written.metadata_path))
    return sorted(records, key=lambda record: record.first_capture_timestamp)


def test_rows_come_back_ordered_by_first_capture_with_overlap_semantics(tmp_path: Path) -> None:
    records = pairs(tmp_path)
    with SegmentCatalog(tmp_path) as catalog:
        for record in reversed(records):
            catalog.add(record)
        assert catalog.segments() == records
        assert [r.stem for r in catalog.segments("cam_b")] == [r.stem for r in records if r.sensor_name == "cam_b"]
        # cam_a's second pair covers [T0+2, T0+2.9]: overlaps [T0+2.9, ...) but not [T0+2.95, ...) nor [..., T0+2)
        second = catalog.segments("cam_a")[1]
        assert second in catalog.segments("cam_a", start=T0 + 2.9, end=T0 + 3.0)
        assert second not in catalog.segments("cam_a", start=T0 + 2.95)
        assert second not in catalog.segments("cam_a", end=T0 + 2.0)
        assert catalog.sensors() == ["cam_a", "cam_b"]
        assert catalog.totals() == (6, sum(r.size_bytes for r in records))
        assert catalog.get(records[0].stem) == records[0]
        assert catalog.get("nope") is None


def test_the_catalog_is_a_wal_database_in_the_save_dir_shared_by_connections(tmp_path: Path) -> None:
    records = pairs(tmp_path, count=1)
    with SegmentCatalog(tmp_path) as writer, SegmentCatalog(tmp_path) as reader:
        writer.add(records[0])
        assert reader.get(records[0].stem) == records[0]
    assert catalog_path(tmp_path) == tmp_path / ".msightd" / "catalog.sqlite3"
    with sqlite3.connect(catalog_path(tmp_path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_adding_a_stem_again_refreshes_sizes_and_keeps_the_upload_mark(tmp_path: Path) -> None:
    record = pairs(tmp_path, count=1)[0]
    with SegmentCatalog(tmp_path) as catalog:
        catalog.add(record)
        catalog.mark_uploaded(record.stem, "bucket/key.mp4", 123.0)
        catalog.add(replace(record, video_size_bytes=999))
        again = catalog.get(record.stem)
    assert again is not None
    assert again.video_size_bytes == 999 and again.uploaded_at == 123.0 and again.upload_key == "bucket/key.mp4"


def test_record_from_metadata_reads_the_dumpers_json_and_sizes_from_disk(tmp_path: Path) -> None:
    written = write_segment(tmp_path, "cam/1", T0, frame_count=4, video=b"0123456789")
    record = record_from_metadata(written.metadata_path)
    assert record.sensor_name == "cam/1"  # the original name, not the file-safe one
    assert record.stem == written.metadata_path.stem and record.video_file == written.video_path.name
    assert record.video_size_bytes == 10
    assert record.metadata_size_bytes == written.metadata_path.stat().st_size
    assert (record.first_capture_timestamp, record.last_capture_timestamp) == (T0, T0 + 0.3)
    assert record.frame_count == 4 and record.fps == 10.0 and record.codec == "h264"
    assert abs(record.written_at - written.metadata_path.stat().st_mtime) < 5
    assert [f.capture_timestamp for f in read_frames(written.metadata_path)] == [T0, T0 + 0.1, T0 + 0.2, T0 + 0.3]


def test_a_json_without_its_mp4_or_not_a_segments_is_not_a_pair(tmp_path: Path) -> None:
    written = write_segment(tmp_path, "cam", T0, video=b"x")
    written.video_path.unlink()
    with pytest.raises(MetadataError, match=r"its video .* is missing"):
        record_from_metadata(written.metadata_path)
    clip = tmp_path / "clip.json"
    clip.write_text(json.dumps({"clip_file": "clip.mp4", "frame_count": 3}))
    with pytest.raises(MetadataError, match="not a segment's metadata"):
        record_from_metadata(clip)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MetadataError, match="not JSON"):
        record_from_metadata(tmp_path / "bad.json")


def test_a_missing_catalog_is_rebuilt_from_the_files(tmp_path: Path) -> None:
    records = pairs(tmp_path)
    (tmp_path / "notes.json").write_text("[]")  # someone's file: skipped, said once
    with capture_logs() as logs:
        catalog = SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger())
    with catalog:
        assert catalog.segments() == records
    assert [entry["event"] for entry in logs] == ["catalog_rebuilt", "catalog_skipped_files"]
    assert logs[0]["segments"] == 6 and logs[1]["files"] == 1


@pytest.mark.parametrize("damage", ["garbage", "torn_pages"])
def test_a_corrupt_catalog_is_set_aside_and_rebuilt_to_the_same_listing(tmp_path: Path, damage: str) -> None:
    records = pairs(tmp_path)
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        before = catalog.segments()
    path = catalog_path(tmp_path)
    if damage == "garbage":
        path.write_bytes(b"this is not an sqlite database" * 100)
    else:
        data = bytearray(path.read_bytes())
        data[100:] = bytes(len(data) - 100)  # header intact, every page zeroed
        path.write_bytes(bytes(data))
    with pytest.raises(CatalogCorrupt):
        SegmentCatalog(tmp_path)
    with capture_logs() as logs:
        catalog = SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger())
    with catalog:
        assert catalog.segments() == before == records
    assert logs[0]["event"] == "catalog_corrupt" and logs[0]["log_level"] == "error"
    assert (path.parent / logs[0]["kept_as"]).exists()


def test_reconcile_adds_pairs_written_without_a_row_and_drops_rows_of_deleted_pairs(tmp_path: Path) -> None:
    records = pairs(tmp_path, count=2)
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        catalog.mark_uploaded(records[1].stem, "k", 1.0)
    late = record_from_metadata(write_segment(tmp_path, "cam_a", T0 + 100, video=b"late").metadata_path)
    (tmp_path / records[0].metadata_file).unlink()
    (tmp_path / records[0].video_file).unlink()
    with capture_logs() as logs:
        catalog = SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger())
    with catalog:
        assert [r.stem for r in catalog.segments()] == [r.stem for r in records[1:]] + [late.stem]
        assert catalog.get(records[1].stem).uploaded_at == 1.0  # type: ignore[union-attr]
    assert logs == [
        {"event": "catalog_reconciled", "added": 1, "removed": 1, "save_dir": str(tmp_path), "log_level": "info"}
    ]


def test_a_rebuild_keeps_upload_marks_of_a_readable_catalog(tmp_path: Path) -> None:
    records = pairs(tmp_path, count=1)
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        catalog.mark_uploaded(records[0].stem, "key0", 5.0)
        assert catalog.rebuild() == (2, [])
        assert catalog.get(records[0].stem).upload_key == "key0"  # type: ignore[union-attr]


def test_uploads(tmp_path: Path) -> None:
    records = pairs(tmp_path, count=2)
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        assert not catalog.uploads_required()
        catalog.require_uploads("s3")
        assert catalog.uploads_required() and catalog.uploaders() == ["s3"]
        assert catalog.pending_uploads(limit=2) == records[:2]
        catalog.mark_uploaded(records[0].stem, "edge/cam_a/x.mp4", 10.0)
        assert catalog.pending_uploads() == records[1:]
        pending = records[1:]
        assert catalog.upload_backlog() == (3, sum(r.size_bytes for r in pending), pending[0].first_capture_timestamp)
        catalog.release_uploads("s3")
        assert not catalog.uploads_required()


def test_an_uploaders_declaration_survives_a_corrupt_catalog(tmp_path: Path) -> None:
    pairs(tmp_path, count=1)
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        catalog.require_uploads("s3")
    catalog_path(tmp_path).write_bytes(b"\0" * 4096)
    with capture_logs(), SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        assert catalog.uploads_required()
        assert len(catalog.pending_uploads()) == 2  # marks are gone: every pair counts as not uploaded


def test_scan_reads_the_files_into_memory_without_touching_the_save_dir(tmp_path: Path) -> None:
    records = pairs(tmp_path, count=1)
    catalog, problems = SegmentCatalog.scan(tmp_path)
    with catalog:
        assert catalog.segments() == records and problems == []
    assert not (tmp_path / ".msightd").exists()


def test_frames_come_from_the_json(tmp_path: Path) -> None:
    records = pairs(tmp_path, sensors=("cam",), count=1)
    with SegmentCatalog.open_or_rebuild(tmp_path, structlog.get_logger()) as catalog:
        frames = catalog.frames(records[0].stem)
    assert [f.frame_id for f in frames] == list(range(1000, 1010))
