from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from msightd.messages import SegmentMessage
from msightd.storage.writer import SegmentWriter


def segment(
    video: bytes = b"mp4-bytes", sensor: str = "cam", start: float = 1769254140.0, first_id: int = 11
) -> SegmentMessage:
    return SegmentMessage(
        sensor_name=sensor,
        capture_timestamp=start,
        creation_timestamp=start + 1,
        frame_id=first_id,
        device_name="edge",
        video=video,
        frame_ids=(first_id, first_id + 1),
        capture_timestamps=(start, start + 0.1),
        fps=10.0,
        codec="h264",
        width=4,
        height=4,
    )


def test_writes_mp4_and_json_with_the_same_stem(tmp_path: Path) -> None:
    written = SegmentWriter(tmp_path).write(segment())
    assert written.video_path.name == "cam_20260124_112900_000000.mp4"
    assert written.metadata_path.name == "cam_20260124_112900_000000.json"
    assert written.video_path.read_bytes() == b"mp4-bytes"
    meta = json.loads(written.metadata_path.read_text())
    assert meta["video_sha256"] == hashlib.sha256(b"mp4-bytes").hexdigest()
    assert meta["video_size_bytes"] == 9 and meta["frame_count"] == 2
    assert [f["frame_id"] for f in meta["frames"]] == [11, 12]
    assert sorted(p.name for p in tmp_path.iterdir()) == [written.metadata_path.name, written.video_path.name]


def test_redelivered_identical_segment_is_not_written_twice(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path)
    first = writer.write(segment())
    again = writer.write(segment())
    assert again.duplicate and again.video_path == first.video_path
    assert len(list(tmp_path.iterdir())) == 2


def test_redelivered_segment_re_encoded_differently_is_not_written_twice(tmp_path: Path) -> None:
    """Same sensor and frames, other bytes (the aggregator restarted and encoded the frames again)."""
    writer = SegmentWriter(tmp_path)
    first = writer.write(segment(b"first encode"))
    again = writer.write(segment(b"second encode"))
    assert again.duplicate and again.video_path == first.video_path
    assert first.video_path.read_bytes() == b"first encode"
    assert len(list(tmp_path.iterdir())) == 2


def test_a_different_segment_with_the_same_name_never_overwrites(tmp_path: Path) -> None:
    """Two cameras publishing one sensor name, whose segments start in the same microsecond."""
    writer = SegmentWriter(tmp_path)
    first = writer.write(segment(b"one"))
    second = writer.write(segment(b"two", first_id=21))
    assert first.video_path.read_bytes() == b"one"
    assert second.video_path.name == "cam_20260124_112900_000000_1.mp4"
    assert second.video_path.read_bytes() == b"two"


def test_missing_json_of_an_existing_mp4_is_completed(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path)
    first = writer.write(segment())
    first.metadata_path.unlink()
    again = writer.write(segment())
    assert not again.duplicate and again.metadata_path.exists()


def test_failed_write_leaves_no_file_behind(tmp_path: Path) -> None:
    """A write that fails half-way (here: a file-size limit, which binds root too, like a full disk)
    leaves neither a partial file under the final name nor a temp file."""
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_segment_writer import segment
from msightd.storage.writer import SegmentWriter
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    SegmentWriter(Path({str(tmp_path)!r})).write(segment(b"x" * 1_000_000))
except OSError as exc:
    print("errno", exc.errno)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"errno {errno.EFBIG}", result.stderr
    assert list(tmp_path.iterdir()) == []


def test_prepare_removes_temp_files_of_dead_writers_only(tmp_path: Path) -> None:
    dead = tmp_path / ".msightd-999999999-1-x.mp4.tmp"
    alive = tmp_path / f".msightd-{os.getpid()}-1-y.mp4.tmp"
    dead.write_bytes(b"partial")
    alive.write_bytes(b"in progress")
    SegmentWriter(tmp_path).prepare()
    assert not dead.exists() and alive.exists()
