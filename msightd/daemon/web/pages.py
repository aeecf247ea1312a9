"""Server-rendered HTML: the status page ``/`` and one page per recorded sensor ``/sensor``.

Everything is rendered here, once, in Python (every value escaped); the page's little script
(``static/app.js``) only refreshes thumbnails, swaps the parts marked ``data-live`` for fresh ones from
``/?live=1`` every few seconds (the node table: cheap, no catalog read) and those marked
``data-live-slow`` from the whole page every minute (the day-long timelines: a few hundred ms of CPU
for six cameras' 8,640 segments each), so there is no second renderer in JavaScript; and it points the
player at a segment.
Times are shown in UTC, as the files name them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from msightd.daemon.web.api import (
    DAY_S,
    SensorWindow,
    file_url,
    requested_window,
    sensor_url,
    sensor_window,
    status_document,
)
from msightd.daemon.web.http import Request, Response
from msightd.daemon.web.site import WebSources, iso
from msightd.daemon.web.timeline import Span, clip, segment_has_gap

#: Timeline labels: this many intervals on a bar (every 4 h on a day).
_TICKS = 6
HOUR_S = 3600.0
#: Rows of the segment table on a sensor page (an hour of 10-s segments); the API lists more.
PAGE_ROWS = 360


def html_response(body: str, status: int = 200) -> Response:
    return Response(
        status=status,
        body=body.encode(),
        content_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


def page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel=stylesheet href="/static/style.css"><script defer src="/static/app.js"></script></head>'
        f'<body><header><a href="/" class=brand>msightd</a> <span>{escape(title)}</span></header>'
        f"<main>{body}</main></body></html>\n"
    )


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def fmt_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover


def clock_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cells(values: Iterable[str]) -> str:
    return "".join(f"<td>{v}</td>" for v in values)


# -- the status page -------------------------------------------------------------------------------


def _health_banner(health: dict[str, Any] | None) -> str:
    if health is None:
        return ""
    ok = health.get("http_status") == 200
    problems = health.get("problems") or []
    detail = "; ".join(
        escape(f"{p.get('node')}: {p.get('detail') or p.get('problem')}" if isinstance(p, dict) else str(p))
        for p in problems
    )
    text = "healthy" if ok else f"unhealthy: {detail or 'see /healthz'}"
    return f'<p id=health data-live class="health {"ok" if ok else "bad"}">{text}</p>'


def _node_rows(nodes: list[dict[str, Any]], now: float) -> str:
    rows = []
    for node in nodes:
        rate = node.get("frame_rate_hz")
        progress = node.get("last_progress_at")
        rows.append(
            f'<tr data-node="{escape(node["name"])}">'
            + _cells(
                [
                    escape(node["name"]),
                    escape(node["kind"]),
                    f'<span class="state {escape(node["state"])}">{escape(node["state"])}</span>',
                    str(node["pid"] or "-"),
                    fmt_duration(node.get("uptime_s")),
                    str(node["restarts"]),
                    f"{rate:.1f}" if rate is not None else "-",
                    f"{fmt_duration(max(0.0, now - progress))} ago" if progress else "-",
                    escape(node.get("last_exit") or "-"),
                ]
            )
            + "</tr>"
        )
    head = _cells(["Node", "Kind", "State", "PID", "Uptime", "Restarts", "Frames/s", "Last progress", "Last exit"])
    return (
        f"<table id=nodes data-live><thead><tr>{head.replace('td>', 'th>')}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def timeline(window: SensorWindow, live_id: str | None = None, since: float | None = None, label: str = "") -> str:
    """A bar for ``[since or window.start, window.end)``: recorded spans green, gaps red, unknown grey."""
    start = window.start if since is None else max(since, window.start)
    width = window.end - start

    def rects(spans: list[Span], cls: str, what: str) -> str:
        out = []
        for span in clip(spans, start, window.end):
            x = (span.start - start) / width * 1000
            w = max(span.duration_s / width * 1000, 0.8)
            label = f"{what} {clock_time(span.start)} to {clock_time(span.end)} UTC ({fmt_duration(span.duration_s)})"
            out.append(f'<rect class={cls} x="{x:.2f}" y="0" width="{w:.2f}" height="20"><title>{label}</title></rect>')
        return "".join(out)

    live = f" id={escape(live_id)} data-live-slow" if live_id else ""
    ticks = "".join(
        f"<span>{datetime.fromtimestamp(start + width * i / _TICKS, UTC):%H:%M}</span>" for i in range(_TICKS + 1)
    )
    summary = f"{len(window.spans)} spans, {len(window.gaps)} gaps" if window.catalog else "no catalog yet"
    return (
        f'<div class=timeline{live} title="{escape(summary)}">'
        + (f"<div class=label>{escape(label)}</div>" if label else "")
        + '<svg viewBox="0 0 1000 20" preserveAspectRatio="none" role=img>'
        f'<rect class=unknown x="0" y="0" width="1000" height="20"></rect>'
        f"{rects(window.spans, 'recorded', 'recorded')}{rects(window.gaps, 'gap', 'gap')}</svg>"
        f"<div class=ticks>{ticks}</div></div>"
    )


def _camera_cards(sources: WebSources, status: dict[str, Any], now: float) -> str:
    layout = sources.layout()
    cards: list[str] = []
    for camera in status["cameras"]:
        timelines: list[str] = []
        for archive in layout.archives:
            window = sensor_window(sources, archive, camera["sensor_name"], now - DAY_S, now)
            if window.segments or len(layout.archives) == 1:
                link = sensor_url(archive.name, camera["sensor_name"])
                live_id = f"tl-{len(cards)}-{len(timelines)}"
                timelines.append(
                    f'<a href="{escape(link)}">{escape(archive.name)}: {len(window.segments)} segments in 24 h</a>'
                    + timeline(window, live_id=f"{live_id}-h", since=now - HOUR_S, label="last hour")
                    + timeline(window, live_id=f"{live_id}-d", label="last 24 hours")
                )
        cards.append(
            "<section class=camera>"
            f"<h3>{escape(camera['sensor_name'])} <small>{escape(camera['node'])}</small></h3>"
            f'<img class=thumbnail data-refresh src="{escape(camera["thumbnail_url"])}" '
            f'alt="latest frame of {escape(camera["sensor_name"])}" width=320>'
            f"{''.join(timelines)}</section>"
        )
    return f"<div class=cameras>{''.join(cards)}</div>" if cards else "<p>No camera nodes configured.</p>"


def _recordings(status: dict[str, Any]) -> str:
    rows = []
    for archive in status["archives"]:
        sensors = archive["sensors"]
        if sensors is None:
            rows.append(f"<tr><td>{escape(archive['name'])}</td><td colspan=2>no catalog yet</td></tr>")
            continue
        for sensor in sensors:
            link = sensor_url(archive["name"], sensor)
            rows.append(
                f"<tr><td>{escape(archive['name'])}</td><td>{escape(archive['save_dir'])}</td>"
                f'<td><a class=sensor-link href="{escape(link)}">{escape(sensor)}</a></td></tr>'
            )
    return (
        "<table id=recordings><thead><tr><th>Dumper</th><th>Save dir</th><th>Sensor</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def status_page(sources: WebSources, live_only: bool = False) -> str:
    """The whole status page, or (``live_only``) just its ``data-live`` parts, for the 5-s refresh."""
    status = status_document(sources, with_archives=not live_only)
    now = status["now"]
    live = (
        f"<span data-live id=updated>updated {clock_time(now)} UTC</span>"
        f"{_health_banner(status['health'])}{_node_rows(status['nodes'], now)}"
    )
    if live_only:
        return page("status", live)
    body = (
        f"<p class=meta>pid {status['pid']} &middot; {escape(str(status['config']))} &middot; "
        f"<span data-live id=updated>updated {clock_time(now)} UTC</span></p>"
        f"{_health_banner(status['health'])}<h2>Nodes</h2>{_node_rows(status['nodes'], now)}"
        f"<h2>Cameras</h2>{_camera_cards(sources, status, now)}<h2>Recordings</h2>{_recordings(status)}"
    )
    return page("status", body)


# -- a sensor's page -------------------------------------------------------------------------------


def _segment_rows(window: SensorWindow) -> str:
    rows = []
    for segment in list(reversed(window.segments))[:PAGE_ROWS]:
        video = file_url(window.archive.name, segment.video_file)
        duration = segment.last_capture_timestamp - segment.first_capture_timestamp
        rows.append(
            f'<tr class=segment data-stem="{escape(segment.stem)}">'
            + _cells(
                [
                    clock_time(segment.first_capture_timestamp),
                    fmt_duration(duration),
                    str(segment.frame_count),
                    f"{segment.width}x{segment.height} {escape(segment.codec)}",
                    fmt_bytes(segment.video_size_bytes),
                    "gap inside" if segment_has_gap(segment) else "",
                    f'<a href="{escape(video)}" data-play>play</a> &middot; '
                    f'<a href="{escape(video)}" download>{escape(segment.video_file)}</a> &middot; '
                    f'<a href="{escape(file_url(window.archive.name, segment.metadata_file))}">json</a>',
                ]
            )
            + "</tr>"
        )
    head = _cells(["Start (UTC)", "Length", "Frames", "Video", "Size", "", "Files"]).replace("td>", "th>")
    count = f"{len(window.segments)}{'+' if window.truncated else ''} segments in this window"
    more = f", the newest {PAGE_ROWS} listed" if window.truncated or len(window.segments) > PAGE_ROWS else ""
    return (
        f"<p>{count}{more}</p><table id=segments><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _input_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _export_form(window: SensorWindow) -> str:
    newest = window.segments[-1] if window.segments else None
    start = newest.first_capture_timestamp if newest else window.end - 60
    end = newest.last_capture_timestamp + 1 if newest else window.end
    return (
        '<form id=export action="/export" method=get>'
        f'<input type=hidden name=archive value="{escape(window.archive.name)}">'
        f'<input type=hidden name=sensor value="{escape(window.sensor)}">'
        f'<label>From <input type=datetime-local step=1 name=start value="{_input_time(start)}"></label> '
        f'<label>to <input type=datetime-local step=1 name=end value="{_input_time(end)}"></label> UTC '
        "<button type=submit>Download one clip</button></form>"
    )


def _window_links(window: SensorWindow) -> str:
    span = window.end - window.start
    base = {"archive": window.archive.name, "sensor": window.sensor}

    def link(label: str, start: float) -> str:
        query = urlencode({**base, "start": iso(start), "end": iso(start + span)})
        return f'<a href="/sensor?{escape(query)}">{label}</a>'

    latest = f'<a href="/sensor?{escape(urlencode(base))}">latest</a>'
    return f"<p class=nav>{link('&larr; earlier', window.start - span)} &middot; {latest} &middot; " + (
        f"{link('later &rarr;', window.end)}</p>"
    )


def _sensor_timelines(window: SensorWindow) -> str:
    whole = timeline(window, label=f"{clock_time(window.start)} to {clock_time(window.end)} UTC")
    if window.end - window.start <= 2 * HOUR_S:
        return whole
    return timeline(window, since=window.end - HOUR_S, label="its last hour") + whole


def sensor_page(sources: WebSources, request: Request) -> str:
    window = requested_window(sources, request)
    newest = window.segments[-1] if window.segments else None
    src = f' src="{escape(file_url(window.archive.name, newest.video_file))}"' if newest else ""
    body = (
        f"<h2>{escape(window.sensor)} <small>in {escape(window.archive.name)} "
        f"({escape(str(window.archive.save_dir))})</small></h2>"
        f"{_sensor_timelines(window)}{_window_links(window)}"
        f"<video id=player controls muted autoplay playsinline preload=auto{src}></video>"
        f"<h3>Export</h3>{_export_form(window)}<h3>Segments</h3>{_segment_rows(window)}"
    )
    return page(window.sensor, body)


class Pages:
    """Handlers for ``/`` and ``/sensor``."""

    def __init__(self, sources: WebSources) -> None:
        self._sources = sources

    def index(self, request: Request) -> Response:
        if request.segments:
            return html_response(page("not found", "<p>No such page.</p>"), status=404)
        return html_response(status_page(self._sources, live_only=request.query.get("live") == "1"))

    def sensor(self, request: Request) -> Response:
        return html_response(sensor_page(self._sources, request))
