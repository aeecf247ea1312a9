"""Route tables of the daemon's two listeners, both :class:`~msightd.daemon.web.http.HttpServer`:

- the metrics listener (``[metrics]``, default 127.0.0.1:9464): ``/metrics`` and ``/healthz``, never a
  token (Prometheus and service managers scrape it; it shows counts, not recordings);
- the web listener (``[web]``, default 127.0.0.1:9465): the pages, ``/api/``, segment files, thumbnails
  and ``/export``, behind the optional token.

Two listeners rather than one: the web can hold a token (and be turned off) without changing how
Prometheus scrapes, and a token never guards ``/healthz``. The server class is the same.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from msightd.daemon.web.api import JsonApi, json_response
from msightd.daemon.web.export import ExportHandler
from msightd.daemon.web.files import file_response
from msightd.daemon.web.http import Handler, HttpServer, Request, Response, text_response
from msightd.daemon.web.pages import Pages
from msightd.daemon.web.site import WebSources
from msightd.protocol import THUMBNAIL_INTERVAL_S, thumbnail_demand_path

#: Segment files never change once written: let the browser keep them for a while.
SEGMENT_CACHE_S = 3600
#: How long a thumbnail request waits for a camera that had stopped making thumbnails (nobody was looking) to
#: make one: its next check of the demand file, plus a keyframe.
THUMBNAIL_WAIT_S = THUMBNAIL_INTERVAL_S + 2.0
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("msightd.daemon.web") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in _STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), _STATIC_TYPES[suffix])
    return files


def want_thumbnail(directory: Path, name: str) -> None:
    """Tell the camera nodes that the page shows thumbnails (they make them only then, see
    :mod:`msightd.media.thumbnail`) and, when ``name`` is not there yet, wait a little for it. Only a plain
    file name is waited for, so the wait tells nothing about paths outside the directory."""
    with contextlib.suppress(OSError):  # the directory is made by the first camera's first thumbnail
        directory.mkdir(exist_ok=True)
        thumbnail_demand_path(directory).touch()
    if os.path.basename(name) != name or name.startswith("."):
        return
    deadline = time.monotonic() + THUMBNAIL_WAIT_S
    while not os.path.exists(directory / name) and time.monotonic() < deadline:
        time.sleep(0.1)


def web_routes(sources: WebSources, log: structlog.typing.FilteringBoundLogger) -> dict[str, Handler]:
    pages = Pages(sources)
    static = _static_files()

    def serve_static(request: Request) -> Response:
        found = static.get(request.segments[1]) if len(request.segments) == 2 else None
        if found is None:
            return text_response(404, "no such file")
        return Response(body=found[0], content_type=found[1], headers={"Cache-Control": "no-cache"})

    def serve_segment_file(request: Request) -> Response:
        if len(request.segments) != 3:
            return text_response(404, "use /files/<dumper>/<file>")
        archive = sources.layout().archive(request.segments[1])
        return file_response(request, archive.save_dir, request.segments[2], cache_s=SEGMENT_CACHE_S)

    def serve_thumbnail(request: Request) -> Response:
        directory = sources.layout().thumbnail_dir
        if len(request.segments) != 2 or directory is None or not request.segments[1].endswith(".jpg"):
            return text_response(404, "no such thumbnail")
        want_thumbnail(directory, request.segments[1])
        return file_response(request, directory, request.segments[1])

    return {
        "": pages.index,
        "sensor": pages.sensor,
        "api": JsonApi(sources),
        "files": serve_segment_file,
        "thumbnail": serve_thumbnail,
        "export": ExportHandler(sources, log),
        "static": serve_static,
    }


def metrics_routes(
    registry: CollectorRegistry, health: Callable[[], tuple[int, dict[str, Any]]] | None = None
) -> dict[str, Handler]:
    def serve_metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(body=encoder(registry), content_type=content_type, headers={"Cache-Control": "no-store"})

    def serve_health(request: Request) -> Response:
        if health is None:
            return text_response(404, "no health check in this daemon")
        code, body = health()
        return json_response(body, status=code)

    def index(request: Request) -> Response:
        if request.segments:
            return text_response(404, "this listener serves /metrics and /healthz")
        return text_response(200, "msightd: /metrics (Prometheus), /healthz (JSON)")

    return {"": index, "metrics": serve_metrics, "healthz": serve_health}


def web_server(
    host: str,
    port: int,
    token: str | None,
    sources: WebSources,
    log: structlog.typing.FilteringBoundLogger,
) -> HttpServer:
    """The web listener (not started: call ``start()``, which raises ``OSError`` if it cannot bind)."""
    return HttpServer("web", host, port, web_routes(sources, log), log, token=token)


def metrics_server(
    host: str,
    port: int,
    registry: CollectorRegistry,
    log: structlog.typing.FilteringBoundLogger,
    health: Callable[[], tuple[int, dict[str, Any]]] | None = None,
) -> HttpServer:
    """The metrics listener (not started)."""
    return HttpServer("metrics", host, port, metrics_routes(registry, health), log)
