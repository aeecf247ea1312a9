"""The web and metrics listeners on real loopback sockets, asked with raw HTTP requests (as a hostile
client would: no client-side normalisation of paths)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, Gauge

from msightd.daemon.web.http import HttpServer
from msightd.daemon.web.server import metrics_server, web_server
from msightd.daemon.web.site import Archive, Camera, ExportFailed, SiteLayout, WebSources
from msightd.protocol import thumbnail_demand_path
from tests.support.web import Answer, get

SECRET = b"the contents of a file outside every served directory"
STEM = "test_camera_20260101_000000_000000"
TOKEN = "tok-3f9a"


def status() -> dict[str, Any]:
    return {
        "pid": 4242,
        "config": "/etc/msightd.toml",
        "nodes": [
            {"name": "rtsp_node", "kind": "rtsp", "state": "running", "pid": 4243, "uptime_s": 75.0, "restarts": 1,
             "last_exit": "exited with code 1"},
            {"name": "video_dumper", "kind": "video_local_dumper", "state": "backoff", "pid": None, "uptime_s": None,
             "restarts": 3, "last_exit": "killed by SIGKILL"},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Served directories and, beside them, a secret no request may read. Shared by the module's tests
    (they only read), so one server serves them all."""
    tmp_path = tmp_path_factory.mktemp("web")
    save_dir = tmp_path / "videos"
    thumbs = tmp_path / "thumbnails"
    save_dir.mkdir()
    thumbs.mkdir()
    (tmp_path / "secret.mp4").write_bytes(SECRET)
    (tmp_path / "secret.jpg").write_bytes(SECRET)
    (save_dir / f"{STEM}.mp4").write_bytes(os.urandom(200_000))
    (save_dir / f"{STEM}.json").write_text(json.dumps({"sensor_name": "test_camera"}))
    (save_dir / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    (thumbs / "test_camera.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9")
    (thumbs / "evil.jpg").symlink_to(tmp_path / "secret.jpg")
    return {"save_dir": save_dir, "thumbs": thumbs, "root": tmp_path}


def sources_for(files: dict[str, Path], **overrides: Any) -> WebSources:
    registry = CollectorRegistry()
    Gauge("msightd_frame_rate_hertz", "fps", ("node", "sensor"), registry=registry).labels("rtsp_node", "cam").set(9.5)
    layout = SiteLayout(
        cameras=(Camera("rtsp_node", "test_camera", "test_camera.jpg"),),
        archives=(Archive("video_dumper", files["save_dir"]),),
        thumbnail_dir=files["thumbs"],
    )
    return WebSources(
        status=status, layout=lambda: layout, open_index=lambda _dir: None, registry=registry, **overrides
    )


def started(server: HttpServer) -> Iterator[HttpServer]:
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def web(files: dict[str, Path]) -> Iterator[HttpServer]:
    yield from started(web_server("127.0.0.1", 0, None, sources_for(files), structlog.get_logger()))


@pytest.fixture(scope="module")
def web_with_token(files: dict[str, Path]) -> Iterator[HttpServer]:
    yield from started(web_server("127.0.0.1", 0, TOKEN, sources_for(files), structlog.get_logger()))


def video(web: HttpServer, headers: dict[str, str] | None = None, method: str = "GET") -> Answer:
    return get(web.port, f"/files/video_dumper/{STEM}.mp4", headers, method=method)


def test_a_segment_is_served_whole_and_by_byte_range(web: HttpServer, files: dict[str, Path]) -> None:
    data = (files["save_dir"] / f"{STEM}.mp4").read_bytes()
    whole = video(web)
    assert whole.status == 200 and whole.body == data
    assert whole.headers["Content-Type"] == "video/mp4" and whole.headers["Accept-Ranges"] == "bytes"
    part = video(web, {"Range": "bytes=1000-1999"})
    assert part.status == 206 and part.body == data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    tail = video(web, {"Range": "bytes=-10"})
    assert tail.status == 206 and tail.body == data[-10:]
    head = video(web, {"Range": "bytes=0-"}, method="HEAD")
    assert head.status == 206 and head.body == b"" and head.headers["Content-Length"] == str(len(data))
    assert video(web, {"Range": f"bytes={len(data)}-"}).status == 416


def test_a_range_for_an_older_version_of_the_file_gets_the_whole_file(web: HttpServer) -> None:
    etag = video(web, method="HEAD").headers["ETag"]
    assert video(web, {"Range": "bytes=0-9", "If-Range": etag}).status == 206
    assert video(web, {"Range": "bytes=0-9", "If-Range": '"older"'}).status == 200
    assert video(web, {"If-None-Match": etag}).status == 304


HOSTILE_TARGETS = [
    "/files/video_dumper/..%2Fsecret.mp4",
    "/files/video_dumper/%2e%2e%2fsecret.mp4",
    "/files/video_dumper/%2E%2E/secret.mp4",
    "/files/video_dumper/..%5Csecret.mp4",
    "/files/video_dumper/%252e%252e%252fsecret.mp4",
    "/files/video_dumper/../secret.mp4",
    "/files/video_dumper/../../secret.mp4",
    "/files/..%2F/secret.mp4",
    "/files/video_dumper/%2Fetc%2Fpasswd",
    "/files/video_dumper//etc/passwd",
    "/files/video_dumper/link.mp4",
    "/files/video_dumper/secret.mp4%00.mp4",
    "/files/video_dumper/.msightd",
    "/thumbnail/..%2Fsecret.jpg",
    "/thumbnail/evil.jpg",
    "/thumbnail/%2e%2e/secret.jpg",
    "/static/..%2F..%2Fhttp.py",
    "/static/../http.py",
    "//etc/passwd",
    "/../../../../etc/passwd",
    "http://127.0.0.1/files/video_dumper/../secret.mp4",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_hostile_paths_read_nothing_outside_the_served_directories(web: HttpServer, target: str) -> None:
    answer = get(web.port, target)
    assert answer.status in (400, 404), (answer.status, answer.text[:200])
    assert SECRET not in answer.body and b"root:" not in answer.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_reading_methods_are_allowed(web: HttpServer, method: str) -> None:
    answer = get(web.port, "/", method=method)
    assert answer.status == 405 and answer.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9465", "10.0.0.1", "127.0.0.1.nip.io"])
def test_a_loopback_listener_refuses_foreign_host_names(web: HttpServer, host: str) -> None:
    """A page on another site cannot reach it by DNS rebinding."""
    assert get(web.port, "/api/status", host_header=host).status == 421
    assert get(web.port, "/api/status", host_header=f"localhost:{web.port}").status == 200


def test_the_status_page_shows_nodes_rates_and_thumbnails(web: HttpServer) -> None:
    page = get(web.port, "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for expected in ("rtsp_node", "video_dumper", "backoff", "9.5", "1m 15s", "killed by SIGKILL"):
        assert expected in page.text
    assert '<img class=thumbnail data-refresh src="/thumbnail/test_camera.jpg"' in page.text
    thumbnail = get(web.port, "/thumbnail/test_camera.jpg")
    assert thumbnail.status == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"
    assert thumbnail.headers["Cache-Control"] == "no-store"
    assert get(web.port, "/static/app.js").status == 200
    assert get(web.port, "/nope").status == 404


def test_a_thumbnail_request_tells_the_cameras_and_waits_for_a_late_one(
    web: HttpServer, files: dict[str, Path]
) -> None:
    demand = thumbnail_demand_path(files["thumbs"])
    demand.unlink(missing_ok=True)
    assert get(web.port, "/thumbnail/test_camera.jpg").status == 200
    assert time.time() - demand.stat().st_mtime < 5  # camera nodes make thumbnails while this is fresh
    late = files["thumbs"] / "late_camera.jpg"  # a camera that had stopped: it makes one on its next check
    writer = threading.Timer(1.0, lambda: late.write_bytes(b"\xff\xd8 late \xff\xd9"))
    writer.start()
    try:
        answer = get(web.port, "/thumbnail/late_camera.jpg")
    finally:
        writer.join()
        late.unlink(missing_ok=True)
    assert answer.status == 200 and answer.body == b"\xff\xd8 late \xff\xd9"


def test_the_status_api_is_json_with_rates(web: HttpServer) -> None:
    answer = get(web.port, "/api/status")
    document = json.loads(answer.body)
    assert answer.headers["Content-Type"] == "application/json"
    nodes = {node["name"]: node for node in document["nodes"]}
    assert nodes["rtsp_node"]["frame_rate_hz"] == 9.5 and "frame_rate_hz" not in nodes["video_dumper"]
    assert document["cameras"] == [
        {"node": "rtsp_node", "sensor_name": "test_camera", "thumbnail_url": "/thumbnail/test_camera.jpg"}
    ]
    assert document["archives"][0]["sensors"] is None  # no catalog in this save dir


def test_bad_query_parameters_are_one_clear_400(web: HttpServer) -> None:
    answer = get(web.port, "/api/segments?sensor=x&start=yesterday")
    assert answer.status == 400 and "start: 'yesterday' is not a time" in answer.text
    assert "no save dir named 'nope'" in get(web.port, "/api/gaps?archive=nope&sensor=x").text
    assert get(web.port, "/api/segments").status == 400


def test_with_a_token_every_kind_of_request_needs_it(web_with_token: HttpServer) -> None:
    port = web_with_token.port
    for target in (
        "/",
        "/api/status",
        f"/files/video_dumper/{STEM}.mp4",
        "/thumbnail/test_camera.jpg",
        "/static/app.js",
    ):
        refused = get(port, target)
        assert refused.status == 401, target
        assert get(port, target, {"Authorization": "Bearer wrong"}).status == 401
        assert get(port, target + "?token=wrong").status == 401
        assert get(port, target, {"Authorization": f"Bearer {TOKEN}"}).status == 200, target


def test_a_token_in_the_url_becomes_a_cookie_that_opens_videos(web_with_token: HttpServer) -> None:
    port = web_with_token.port
    redirect = get(port, f"/?token={TOKEN}")
    assert redirect.status == 303 and redirect.headers["Location"] == "/"
    cookie = redirect.headers["Set-Cookie"].split(";")[0]
    assert get(port, "/", {"Cookie": cookie}).status == 200
    assert get(port, f"/files/video_dumper/{STEM}.mp4", {"Cookie": cookie, "Range": "bytes=0-9"}).status == 206


def test_the_metrics_listener_serves_the_registry_and_health(files: dict[str, Path]) -> None:
    registry = sources_for(files).registry
    assert registry is not None
    health = (503, {"status": "unhealthy", "problems": ["camera rtsp_node: no frames for 31 s"]})
    for server in started(metrics_server("127.0.0.1", 0, registry, structlog.get_logger(), lambda: health)):
        metrics = get(server.port, "/metrics")
        assert metrics.status == 200 and 'msightd_frame_rate_hertz{node="rtsp_node",sensor="cam"} 9.5' in metrics.text
        healthz = get(server.port, "/healthz")
        assert healthz.status == 503 and json.loads(healthz.body) == health[1]
        openmetrics = get(server.port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert openmetrics.text.rstrip().endswith("# EOF")


def test_an_export_is_sent_and_its_temporary_directory_removed(files: dict[str, Path], tmp_path: Path) -> None:
    made: list[Path] = []

    def exporter(save_dir: Path, sensor: str, start: float, end: float, out_dir: Path) -> Path:
        assert save_dir == files["save_dir"] and sensor == "test_camera" and (start, end) == (1000.0, 1600.0)
        made.append(out_dir)
        if sensor == "test_camera" and len(made) == 2:
            raise ExportFailed("no frames of test_camera between those times")
        clip = out_dir / "test_camera_clip.mp4"
        clip.write_bytes(b"clip" * 1000)
        return clip

    export_root = tmp_path / "exports"
    export_root.mkdir()
    sources = sources_for(files, exporter=exporter, export_tmp_dir=export_root)
    target = "/export?sensor=test_camera&start=1000&end=1970-01-01T00:26:40"
    for server in started(web_server("127.0.0.1", 0, None, sources, structlog.get_logger())):
        answer = get(server.port, target)
        assert answer.status == 200 and answer.body == b"clip" * 1000
        assert answer.headers["Content-Disposition"] == 'attachment; filename="test_camera_clip.mp4"'
        failed = get(server.port, target)
        assert failed.status == 422 and "no frames of test_camera" in failed.text
        too_long = get(server.port, "/export?sensor=test_camera&start=0&end=86400")
        assert too_long.status == 400 and "at most 3600 s" in too_long.text
    assert len(made) == 2 and all(path.parent == export_root for path in made)
    assert list(export_root.iterdir()) == []
