from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from msightd.storage.naming import MAX_SENSOR_NAME_CHARS, safe_sensor_name, segment_stem


def test_stem_is_sensor_then_utc_capture_time_to_the_microsecond() -> None:
    stamp = datetime(2026, 1, 24, 11, 29, 0, 123456, tzinfo=UTC).timestamp()
    assert segment_stem("test_camera", stamp) == "test_camera_20260124_112900_123456"


def test_plain_names_are_kept() -> None:
    assert safe_sensor_name("gs_main-stadium.1") == "gs_main-stadium.1"


@pytest.mark.parametrize(
    "name", ["../x", "../../etc/passwd", "/etc/x", "", ".", "..", "a/b", "a\x00b", "é", "x" * 500, ".hidden", "a\\b"]
)
def test_hostile_names_stay_inside_the_save_dir(name: str, tmp_path: Path) -> None:
    safe = safe_sensor_name(name)
    assert safe and len(safe) <= MAX_SENSOR_NAME_CHARS
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe and not safe.startswith(".")
    assert (tmp_path / f"{safe}_x.mp4").resolve().parent == tmp_path.resolve()


def test_distinct_names_never_collide_after_cleaning() -> None:
    names = ["cam/1", "cam_1", "cam 1", "cam:1", "", "unnamed", "x" * 100, "x" * 101]
    assert len({safe_sensor_name(n) for n in names}) == len(names)
