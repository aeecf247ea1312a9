"""``/export``: one clip of a sensor's time range, made by the injected exporter, sent, then removed.

The only route that writes anything: into a fresh temporary directory (under ``export_tmp_dir``) that is
removed once the clip has been sent, or at once if making it failed. One export at a time (it reads and
writes a lot on a box that is recording); a second request meanwhile gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import structlog

from msightd.daemon.web.api import requested_archive
from msightd.daemon.web.files import SAFE_FILE_NAME
from msightd.daemon.web.http import BadRequest, Request, Response, text_response
from msightd.daemon.web.site import ExportFailed, WebSources, time_window

#: The longest range one export may cover (a clip of an hour of one camera is ~600 MB at the defaults).
MAX_EXPORT_S = 3600.0


class ExportHandler:
    def __init__(self, sources: WebSources, log: structlog.typing.FilteringBoundLogger) -> None:
        self._sources = sources
        self._log = log
        self._busy = threading.Lock()

    def __call__(self, request: Request) -> Response:
        exporter = self._sources.exporter
        if exporter is None:
            return text_response(404, "export is not available in this daemon")
        archive = requested_archive(self._sources.layout(), request)
        sensor = request.query.get("sensor")
        if not sensor:
            raise BadRequest("give sensor=<sensor name>")
        if not request.query.get("start") or not request.query.get("end"):
            raise BadRequest("give start and end (epoch seconds or ISO 8601; no zone means UTC)")
        start, end = time_window(request.query, self._sources.clock(), 0.0)
        if end - start > MAX_EXPORT_S:
            raise BadRequest(f"one export covers at most {MAX_EXPORT_S:.0f} s; got {end - start:.0f} s")
        if not self._busy.acquire(blocking=False):
            response = text_response(503, "another export is running; try again in a moment")
            response.headers["Retry-After"] = "10"
            return response
        try:
            out_dir = Path(tempfile.mkdtemp(prefix="msightd-export-", dir=self._sources.export_tmp_dir))
            try:
                clip = exporter(archive.save_dir, sensor, start, end, out_dir)
                file = clip.open("rb")
            except ExportFailed as exc:
                shutil.rmtree(out_dir, ignore_errors=True)
                return text_response(422, str(exc))
            except BaseException:
                shutil.rmtree(out_dir, ignore_errors=True)
                raise
        finally:
            self._busy.release()
        size = os.fstat(file.fileno()).st_size
        name = clip.name if SAFE_FILE_NAME.fullmatch(clip.name) else "clip.mp4"
        self._log.info("web_export", archive=archive.name, sensor=sensor, start=start, end=end, size_bytes=size)
        return Response(
            content_type="video/mp4",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
            file=file,
            length=size,
            on_close=lambda: shutil.rmtree(out_dir, ignore_errors=True),
        )
