"""The JSON API under ``/api/``: ``status``, ``segments`` and ``gaps``, and the data the pages render.

Times in answers are epoch seconds (UTC) with ISO 8601 twins for people; query parameters ``start`` and
``end`` take either. ``archive`` names a save dir by its dumper node (optional when there is only one).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from msightd.daemon.web.http import BadRequest, Request, Response, text_response
from msightd.daemon.web.site import Archive, Segment, SiteLayout, WebSources, iso, node_gauges, time_window
from msightd.daemon.web.timeline import Span, gaps_between, recorded_spans, segment_has_gap

DAY_S = 24 * 3600.0
#: Most segments one answer lists (a day of 10-second segments is 8,640): ask for a narrower window.
MAX_SEGMENTS = 2000
#: A camera's recording is late (a trailing gap) only after this many segment lengths without a segment.
LATE_SEGMENTS = 2.0
_SEGMENT_FIELDS = (
    "stem",
    "sensor_name",
    "video_file",
    "metadata_file",
    "first_capture_timestamp",
    "last_capture_timestamp",
    "frame_count",
    "video_size_bytes",
    "codec",
    "width",
    "height",
    "fps",
)


def json_response(document: Any, status: int = 200) -> Response:
    body = json.dumps(document, indent=1, allow_nan=False).encode()
    return Response(status=status, body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


def file_url(archive: str, name: str) -> str:
    return f"/files/{quote(archive, safe='')}/{quote(name, safe='')}"


def sensor_url(archive: str, sensor: str, **extra: str) -> str:
    return "/sensor?" + urlencode({"archive": archive, "sensor": sensor, **extra})


@dataclass(frozen=True)
class SensorWindow:
    """One sensor's segments in ``[start, end)`` of one save dir, with its spans and gaps."""

    archive: Archive
    sensor: str
    start: float
    end: float
    segments: Sequence[Segment]
    truncated: bool
    spans: list[Span]
    gaps: list[Span]
    catalog: bool

    def segment_json(self, segment: Segment) -> dict[str, Any]:
        row: dict[str, Any] = {name: getattr(segment, name) for name in _SEGMENT_FIELDS}
        if dataclasses.is_dataclass(segment):
            row.update({k: v for k, v in dataclasses.asdict(segment).items() if k not in row})
        row["first_capture_time"] = iso(segment.first_capture_timestamp)
        row["last_capture_time"] = iso(segment.last_capture_timestamp)
        row["has_gap"] = segment_has_gap(segment)
        row["video_url"] = file_url(self.archive.name, segment.video_file)
        row["metadata_url"] = file_url(self.archive.name, segment.metadata_file)
        return row


def sensor_window(
    sources: WebSources, archive: Archive, sensor: str, start: float, end: float, limit: int = MAX_SEGMENTS
) -> SensorWindow:
    index = sources.open_index(archive.save_dir)
    if index is None:
        return SensorWindow(archive, sensor, start, end, [], False, [], [], catalog=False)
    segments = list(index.segments(sensor=sensor, start=start, end=end))

    def frame_times(segment: Segment) -> list[float]:
        try:
            return [frame.capture_timestamp for frame in index.frames(segment.stem)]
        except (OSError, ValueError, KeyError):  # deleted by retention meanwhile, or unreadable
            return [segment.first_capture_timestamp, segment.last_capture_timestamp]

    spans = recorded_spans(segments, frames_of=frame_times)
    late_s = LATE_SEGMENTS * max(
        (s.last_capture_timestamp - s.first_capture_timestamp for s in segments[-3:]), default=0
    )
    gaps = gaps_between(spans, start, min(end, sources.clock()), min_gap_s=late_s + 5.0)
    truncated = len(segments) > limit
    return SensorWindow(archive, sensor, start, end, segments[-limit:], truncated, spans, gaps, catalog=True)


def archive_sensors(sources: WebSources, archive: Archive) -> list[str] | None:
    """The sensors recorded in a save dir, or ``None`` when it has no catalog (yet)."""
    index = sources.open_index(archive.save_dir)
    return None if index is None else index.sensors()


def status_document(sources: WebSources, with_archives: bool = True) -> dict[str, Any]:
    layout = sources.layout()
    snapshot = sources.status()
    gauges = node_gauges(sources.registry)
    # the snapshot's own last_progress_at (when the daemon tracks it) wins over the gauge
    nodes = [{**gauges.get(node["name"], {}), **node} for node in snapshot.get("nodes", [])]
    health = None
    if sources.health is not None:
        code, body = sources.health()
        health = {"http_status": code, **body}
    return {
        "pid": snapshot.get("pid"),
        "config": snapshot.get("config"),
        "now": sources.clock(),
        "health": health,
        "nodes": nodes,
        "cameras": [
            {
                "node": camera.node,
                "sensor_name": camera.sensor_name,
                "thumbnail_url": f"/thumbnail/{quote(camera.thumbnail_name, safe='')}",
            }
            for camera in layout.cameras
        ],
        "archives": [
            {"name": archive.name, "save_dir": str(archive.save_dir), "sensors": archive_sensors(sources, archive)}
            for archive in (layout.archives if with_archives else ())
        ],
    }


def requested_archive(layout: SiteLayout, request: Request) -> Archive:
    name = request.query.get("archive")
    if name is None:
        if len(layout.archives) == 1:
            return layout.archives[0]
        raise BadRequest(f"give archive=<dumper node>: one of {', '.join(a.name for a in layout.archives) or '(none)'}")
    return layout.archive(name)


def requested_window(sources: WebSources, request: Request) -> SensorWindow:
    archive = requested_archive(sources.layout(), request)
    sensor = request.query.get("sensor")
    if not sensor:
        raise BadRequest("give sensor=<sensor name>")
    start, end = time_window(request.query, sources.clock(), DAY_S)
    return sensor_window(sources, archive, sensor, start, end)


class JsonApi:
    """``/api/<name>`` handlers."""

    def __init__(self, sources: WebSources) -> None:
        self._sources = sources

    def __call__(self, request: Request) -> Response:
        name = request.segments[1] if len(request.segments) == 2 else None
        if name == "status":
            return json_response(status_document(self._sources))
        if name == "segments":
            window = requested_window(self._sources, request)
            return json_response(
                {
                    **self._window_header(window),
                    "truncated": window.truncated,
                    "segments": [window.segment_json(s) for s in window.segments],
                }
            )
        if name == "gaps":
            window = requested_window(self._sources, request)
            return json_response(
                {
                    **self._window_header(window),
                    "spans": [s.as_json() for s in window.spans],
                    "gaps": [g.as_json() for g in window.gaps],
                    "segments_with_gaps": sum(segment_has_gap(s) for s in window.segments),
                }
            )
        return text_response(404, "the API has /api/status, /api/segments and /api/gaps")

    @staticmethod
    def _window_header(window: SensorWindow) -> dict[str, Any]:
        return {
            "archive": window.archive.name,
            "sensor": window.sensor,
            "start": window.start,
            "end": window.end,
            "catalog": window.catalog,
        }
