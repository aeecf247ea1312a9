"""``msightd segments ...`` run in-process on real files (the commands wired into ``msightd`` are tested
as real processes in tests/integration)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import pytest

from msightd.cli.segments import main, parse_time
from msightd.storage.catalog import catalog_path
from tests.support.segments import write_segment

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["segments", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def save_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "videos"
    for index in range(3):
        write_segment(directory, "cam", T0 + 2 * index, frame_count=20, first_index=20 * index)
    write_segment(directory, "door", T0 + 1, frame_count=5, video=b"not decoded here")
    return directory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-28T20:26:40", T0),
        ("2026-05-28 20:26:40.5", T0 + 0.5),
        ("2026-05-28T20:26:40Z", T0),
        ("2026-05-28T22:26:40+02:00", T0),
        ("1780000000", T0),
        ("1780000000.25", T0 + 0.25),
    ],
)
def test_times_are_iso_8601_utc_unless_zoned_or_epoch_seconds(text: str, expected: float) -> None:
    assert parse_time(text) == expected


def test_a_bad_time_says_what_is_accepted(capsys: pytest.CaptureFixture[str], save_dir: Path) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="no zone means UTC"):
        parse_time("yesterday")
    with pytest.raises(SystemExit):
        main(["segments", "list", "--save-dir", str(save_dir), "--from", "yesterday"])
    assert "'yesterday' is not a time: use ISO 8601" in capsys.readouterr().err


def test_help_says_times_without_zone_are_utc(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["segments", "gaps", "--help"])
    assert "no zone means UTC" in capsys.readouterr().out


def test_list_reads_the_files_without_creating_a_catalog(capsys: pytest.CaptureFixture[str], save_dir: Path) -> None:
    code, out, err = run(capsys, "list", "--save-dir", str(save_dir))
    assert code == 0
    assert "no catalog yet" in err and not catalog_path(save_dir).exists()
    lines = out.splitlines()
    assert lines[0].startswith("SENSOR") and len([line for line in lines if "2026-05-28T20:26:4" in line]) == 4
    assert "cam: 3 segments" in out and "door: 1 segments" in out


def test_list_json_with_sensor_and_range(capsys: pytest.CaptureFixture[str], save_dir: Path) -> None:
    code, out, _ = run(
        capsys,
        "list",
        "--save-dir",
        str(save_dir),
        "--sensor",
        "cam",
        "--from",
        str(T0 + 2),
        "--to",
        "2026-05-28T20:26:44",
        "--json",
    )
    rows = json.loads(out)
    assert code == 0 and [row["first_capture_time"] for row in rows] == ["2026-05-28T20:26:42.000Z"]
    assert rows[0]["frame_count"] == 20 and rows[0]["sensor_name"] == "cam"


def test_reindex_builds_the_catalog_that_list_then_uses(capsys: pytest.CaptureFixture[str], save_dir: Path) -> None:
    code, out, _ = run(capsys, "reindex", "--save-dir", str(save_dir))
    assert code == 0 and "4 segments" in out and catalog_path(save_dir).exists()
    code, out, err = run(capsys, "list", "--save-dir", str(save_dir), "--json")
    assert code == 0 and err == "" and len(json.loads(out)) == 4


def test_gaps(capsys: pytest.CaptureFixture[str], save_dir: Path) -> None:
    write_segment(save_dir, "cam", T0 + 30, frame_count=10, video=b"after an outage")
    code, out, _ = run(capsys, "gaps", "--save-dir", str(save_dir), "--sensor", "cam", "--json")
    gaps = json.loads(out)
    assert code == 0 and len(gaps) == 1
    assert (gaps[0]["start_timestamp"], gaps[0]["end_timestamp"]) == (T0 + 5.9, T0 + 30)
    assert gaps[0]["start_time"] == "2026-05-28T20:26:45.900Z"


def test_export_writes_a_clip_and_its_json(capsys: pytest.CaptureFixture[str], save_dir: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    code, out, _ = run(
        capsys,
        "export",
        "--save-dir",
        str(save_dir),
        "--sensor",
        "cam",
        "--from",
        str(T0 + 1),
        "--to",
        str(T0 + 3),
        "-o",
        str(clip),
    )
    assert code == 0 and "20 frames of cam from 2 segments" in out
    with av.open(str(clip)) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == 20
    assert json.loads(clip.with_suffix(".json").read_text())["frame_count"] == 20


def test_export_needs_one_sensor_a_range_and_a_place_outside_the_save_dir(
    capsys: pytest.CaptureFixture[str], save_dir: Path, tmp_path: Path
) -> None:
    base = ["export", "--save-dir", str(save_dir), "-o", str(tmp_path / "clip.mp4")]
    code, _, err = run(capsys, *base, "--from", str(T0), "--to", str(T0 + 10))
    assert code == 2 and "the range holds 2 sensors (cam, door); pick one with --sensor" in err
    code, _, err = run(capsys, *base, "--sensor", "cam")
    assert code == 2 and "export needs --from and --to" in err
    code, _, err = run(capsys, *base, "--sensor", "cam", "--from", str(T0 + 5), "--to", str(T0))
    assert code == 2 and "must be earlier than --to" in err
    inside = ["export", "--save-dir", str(save_dir), "-o", str(save_dir / "clip.mp4"), "--sensor", "cam"]
    code, _, err = run(capsys, *inside, "--from", str(T0), "--to", str(T0 + 1))
    assert code == 2 and "outside the save directory" in err


def test_verify_exits_1_naming_the_bad_pair(capsys: pytest.CaptureFixture[str], save_dir: Path) -> None:
    code, out, _ = run(capsys, "verify", "--save-dir", str(save_dir), "--sensor", "cam")
    assert code == 0 and "3 pairs checked, 0 bad" in out
    code, out, _ = run(capsys, "verify", "--save-dir", str(save_dir), "--json")
    report = json.loads(out)
    bad = [pair["stem"] for pair in report["pairs"] if not pair["ok"]]
    assert code == 1 and report["bad"] == 1 and bad == [p.stem for p in save_dir.glob("door_*.json")]
    code, out, _ = run(capsys, "verify", "--save-dir", str(save_dir))
    assert code == 1 and f"BAD {bad[0]}: " in out and "does not decode" in out


def test_a_missing_save_dir_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for command in ("list", "gaps", "verify", "reindex"):
        code, _, err = run(capsys, command, "--save-dir", str(tmp_path / "nope"))
        assert (
            code == 2
            and err.strip() == f"msightd segments {command}: error: save directory {tmp_path / 'nope'} does not exist"
        )
