from __future__ import annotations

import hashlib
import json
from pathlib import Path

from msightd.storage.verify import incomplete_videos, verify_pair, verify_save_dir
from tests.support.segments import encode_frames, write_segment

T0 = 1_780_000_000.0


def rewrite_json(metadata_path: Path, **changes: object) -> None:
    document = json.loads(metadata_path.read_text())
    document.update(changes)
    metadata_path.write_text(json.dumps(document))


def test_sound_pairs_pass(tmp_path: Path) -> None:
    for index in range(2):
        write_segment(tmp_path, "cam", T0 + index, frame_count=10, first_index=10 * index)
    checks = list(verify_save_dir(tmp_path))
    assert [c.ok for c in checks] == [True, True] and [c.frame_count for c in checks] == [10, 10]


def test_a_changed_byte_is_a_hash_mismatch(tmp_path: Path) -> None:
    written = write_segment(tmp_path, "cam", T0, frame_count=10)
    data = bytearray(written.video_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    written.video_path.write_bytes(bytes(data))
    assert "SHA-256" in verify_pair(written.metadata_path).problems[0]


def test_a_wrong_frame_count_and_a_video_that_does_not_decode(tmp_path: Path) -> None:
    short = write_segment(tmp_path, "cam", T0, frame_count=10)
    other = encode_frames(0, 7)
    short.video_path.write_bytes(other)
    rewrite_json(short.metadata_path, video_sha256=hashlib.sha256(other).hexdigest())
    expected = f"{short.video_path.name} decodes to 7 frames, the JSON says 10"
    assert verify_pair(short.metadata_path).problems == (expected,)
    assert verify_pair(short.metadata_path, decode=False).ok

    torn = write_segment(tmp_path, "cam", T0 + 5, frame_count=10)
    head = torn.video_path.read_bytes()[:300]
    torn.video_path.write_bytes(head)
    rewrite_json(torn.metadata_path, video_sha256=hashlib.sha256(head).hexdigest())
    assert "does not decode" in verify_pair(torn.metadata_path).problems[0]


def test_missing_videos_and_unreadable_json_are_bad_lone_videos_are_incomplete(tmp_path: Path) -> None:
    gone = write_segment(tmp_path, "cam", T0, frame_count=3)
    gone.video_path.unlink()
    lone = write_segment(tmp_path, "cam", T0 + 5, frame_count=3)
    lone.metadata_path.unlink()
    (tmp_path / "cam_20260101_000000_000000.json").write_text("{")
    checks = {c.stem: c for c in verify_save_dir(tmp_path, decode=False)}
    assert checks[gone.metadata_path.stem].problems == (f"{gone.video_path.name} is missing",)
    assert "not JSON" in checks["cam_20260101_000000_000000"].problems[0]
    assert incomplete_videos(tmp_path) == [lone.video_path.name]


def test_a_sensor_and_range_select_pairs(tmp_path: Path) -> None:
    write_segment(tmp_path, "a", T0, frame_count=3, video=b"x")
    write_segment(tmp_path, "b", T0, frame_count=3, video=b"x")
    write_segment(tmp_path, "a", T0 + 100, frame_count=3, video=b"x")
    assert [c.sensor_name for c in verify_save_dir(tmp_path, sensor="b", decode=False)] == ["b"]
    selected = list(verify_save_dir(tmp_path, sensor="a", start=T0 + 50, decode=False))
    assert [c.first_capture_timestamp for c in selected] == [T0 + 100]
