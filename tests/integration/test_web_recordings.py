"""The web over a real save dir: segments written by the dumper's writer, indexed by the real catalog."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from msightd.daemon.web.catalogs import CatalogReaders, SubprocessExporter
from msightd.daemon.web.http import HttpServer
from msightd.daemon.web.server import web_server
from msightd.daemon.web.site import Archive, Camera, SiteLayout, WebSources
from msightd.messages import SegmentMessage
from msightd.storage.catalog import SegmentCatalog, catalog_path
from msightd.storage.writer import SegmentWriter
from tests.support.segments import write_segment
from tests.support.web import get

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
NOW = T0 + 600
SENSOR = "cam/north 1"  # untrusted names travel through query strings and stay apart from file names


def segment(start: float, stamps: list[float] | None = None, sensor: str = SENSOR) -> SegmentMessage:
    """A 100-frame 10 fps segment from ``start`` (or with the given capture times)."""
    times = tuple(stamps if stamps is not None else [start + i / 10 for i in range(100)])
    return SegmentMessage(
        sensor_name=sensor,
        capture_timestamp=times[0],
        creation_timestamp=times[-1] + 1,
        frame_id=1,
        device_name="edge",
        video=f"video of {sensor} from {times[0]}".encode() * 100,
        frame_ids=tuple(range(len(times))),
        capture_timestamps=times,
        fps=10.0,
        codec="h264",
        width=640,
        height=480,
    )


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six segments: 0-30 s back to back, a 60 s outage, 90-110 s, then one with a 25 s outage inside."""
    directory = tmp_path_factory.mktemp("recordings") / "videos"
    writer = SegmentWriter(directory)
    for start in (0, 10, 20, 90, 100):
        writer.write(segment(T0 + start))
    inner = [T0 + 110 + i / 10 for i in range(50)] + [T0 + 140 + i / 10 for i in range(50)]
    writer.write(segment(0, inner))
    writer.write(segment(T0 + 5, sensor="other"))
    SegmentCatalog.open_or_rebuild(directory, structlog.get_logger()).close()
    return directory


@pytest.fixture(scope="module")
def web(save_dir: Path) -> Iterator[HttpServer]:
    readers = CatalogReaders()
    layout = SiteLayout(
        cameras=(Camera("rtsp_node", SENSOR, "cam.jpg"),),
        archives=(Archive("video_dumper", save_dir), Archive("empty_dumper", save_dir.parent / "nothing-yet")),
        thumbnail_dir=save_dir.parent,
    )
    sources = WebSources(
        status=lambda: {"pid": 1, "config": "test.toml", "nodes": []},
        layout=lambda: layout,
        open_index=readers.get,
        clock=lambda: NOW,
    )
    server = web_server("127.0.0.1", 0, None, sources, structlog.get_logger())
    server.start()
    yield server
    server.close()
    readers.close()


def api(web: HttpServer, name: str, **query: str) -> dict[str, Any]:
    from urllib.parse import urlencode

    answer = get(web.port, f"/api/{name}?{urlencode(query)}")
    assert answer.status == 200, answer.text
    document: dict[str, Any] = json.loads(answer.body)
    return document


def test_the_segments_api_lists_the_files_on_disk_with_working_urls(web: HttpServer, save_dir: Path) -> None:
    document = api(web, "segments", archive="video_dumper", sensor=SENSOR, start=str(T0 - 60), end=str(NOW))
    rows = document["segments"]
    on_disk = sorted(p.name for p in save_dir.glob("cam_north_1-*.mp4"))
    assert sorted(row["video_file"] for row in rows) == on_disk and len(rows) == 6
    assert [row["has_gap"] for row in rows] == [False] * 5 + [True]
    first = rows[0]
    assert first["first_capture_time"] == "2026-05-28T20:26:40Z"
    assert get(web.port, first["video_url"]).body == (save_dir / first["video_file"]).read_bytes()
    assert json.loads(get(web.port, first["metadata_url"]).body)["sensor_name"] == SENSOR


def test_the_gaps_api_finds_outages_between_and_inside_segments(web: HttpServer) -> None:
    document = api(web, "gaps", archive="video_dumper", sensor=SENSOR, start=str(T0 - 60), end=str(NOW))
    spans = [(round(s["start"] - T0, 1), round(s["end"] - T0, 1)) for s in document["spans"]]
    gaps = [(round(g["start"] - T0, 1), round(g["end"] - T0, 1)) for g in document["gaps"]]
    assert spans == [(0.0, 30.0), (90.0, 115.0), (140.0, 145.0)]
    assert gaps == [(30.0, 90.0), (115.0, 140.0), (145.0, 600.0)]  # the last: nothing since, up to now


def test_a_window_without_the_outage_has_no_gap(web: HttpServer) -> None:
    document = api(web, "gaps", archive="video_dumper", sensor=SENSOR, start=str(T0), end=str(T0 + 30))
    assert document["gaps"] == [] and len(document["spans"]) == 1


def test_the_sensor_page_lists_segments_plays_the_newest_and_offers_export(web: HttpServer, save_dir: Path) -> None:
    from urllib.parse import urlencode

    query = urlencode({"archive": "video_dumper", "sensor": SENSOR, "start": str(T0 - 60), "end": str(NOW)})
    page = get(web.port, f"/sensor?{query}").text
    for video in save_dir.glob("cam_north_1-*.mp4"):
        assert f'data-stem="{video.stem}"' in page
    newest = max(save_dir.glob("cam_north_1-*.mp4")).name
    assert f'preload=auto src="/files/video_dumper/{newest}"></video>' in page
    assert '<form id=export action="/export"' in page and 'value="cam/north 1"' in page
    assert page.count("<rect class=gap") == 3 and "gap inside" in page


def test_the_status_page_lists_recorded_sensors_and_marks_missing_catalogs(web: HttpServer) -> None:
    page = get(web.port, "/").text
    assert "/sensor?archive=video_dumper&amp;sensor=cam%2Fnorth+1" in page
    assert "/sensor?archive=video_dumper&amp;sensor=other" in page
    assert "empty_dumper</td><td colspan=2>no catalog yet" in page
    status = api(web, "status")
    assert {a["name"]: a["sensors"] for a in status["archives"]} == {
        "video_dumper": [SENSOR, "other"],
        "empty_dumper": None,
    }


def test_a_rebuilt_catalog_is_reopened(save_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / "videos"
    shutil.copytree(save_dir, directory)
    readers = CatalogReaders()
    try:
        first = readers.get(directory)
        assert first is not None and readers.get(directory) is first
        SegmentWriter(directory).write(segment(T0 + 500))
        catalog_path(directory).unlink()
        SegmentCatalog.open_or_rebuild(directory, structlog.get_logger()).close()
        second = readers.get(directory)
        assert second is not None and second is not first
        assert len(second.segments(SENSOR)) == 7
        assert readers.get(tmp_path / "no-such-dir") is None
    finally:
        readers.close()


def test_an_export_is_one_clip_of_the_range_and_leaves_nothing_behind(tmp_path: Path) -> None:
    import av

    save_dir = tmp_path / "videos"
    for index in range(3):  # 3 x 10 frames at 10 fps from T0, back to back
        write_segment(save_dir, "cam", T0 + index, first_index=index * 10)
    SegmentCatalog.open_or_rebuild(save_dir, structlog.get_logger()).close()
    readers = CatalogReaders()
    exports = tmp_path / "exports"
    exports.mkdir()
    layout = SiteLayout(archives=(Archive("video_dumper", save_dir),))
    sources = WebSources(
        status=lambda: {"nodes": []},
        layout=lambda: layout,
        open_index=readers.get,
        exporter=SubprocessExporter(),
        export_tmp_dir=exports,
    )
    server = web_server("127.0.0.1", 0, None, sources, structlog.get_logger())
    server.start()
    try:
        answer = get(server.port, f"/export?sensor=cam&start={T0 + 0.5}&end={T0 + 2.5}")
        refused = get(server.port, f"/export?sensor=cam&start={T0 + 60}&end={T0 + 70}")
    finally:
        server.close()
        readers.close()
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Disposition"] == f'attachment; filename="cam_{int(T0)}-{int(T0) + 2}.mp4"'
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(answer.body)
    with av.open(str(clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 20  # frames captured in [T0+0.5, T0+2.5)
    assert refused.status == 422 and "no frames of sensor 'cam' in the range" in refused.text
    assert list(exports.iterdir()) == []
