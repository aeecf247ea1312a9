"""What the web shows, injected by the daemon's composition root: no module-level state, no config reads.

The web never reaches into the supervisor or the nodes: it gets callables (a status snapshot, the current
layout of cameras and save dirs, a way to open a save dir's segment catalog, the metrics registry, the
health check, the exporter) so that tests can hand it real catalogs and files without a daemon, and a
reload (SIGHUP) that changes the nodes changes the page on its next request.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from msightd.cli import segments as segments_cli
from msightd.daemon.web.http import BadRequest
from msightd.daemon.web.timeline import SegmentTimes

#: Gauges read for the node table (node label): frames per second, and the last progress (epoch s).
FRAME_RATE_METRIC = "msightd_frame_rate_hertz"
LAST_PROGRESS_METRIC = "msightd_node_last_progress_timestamp_seconds"


class Segment(SegmentTimes, Protocol):
    """A catalog row as the web reads it (``msightd.storage.catalog.SegmentRecord`` fits): its times (what
    the timeline reads) and its files."""

    @property
    def stem(self) -> str: ...
    @property
    def sensor_name(self) -> str: ...
    @property
    def video_file(self) -> str: ...
    @property
    def metadata_file(self) -> str: ...
    @property
    def video_size_bytes(self) -> int: ...
    @property
    def codec(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


class Frame(Protocol):
    @property
    def capture_timestamp(self) -> float: ...


class SegmentIndex(Protocol):
    """A save dir's catalog, shared by the request threads (it must be thread-safe; the web never closes
    it: its owner, the composition root, does)."""

    def segments(
        self, sensor: str | None = None, start: float | None = None, end: float | None = None
    ) -> Sequence[Segment]: ...
    def sensors(self) -> list[str]: ...
    def frames(self, stem: str) -> Sequence[Frame]: ...


class Exporter(Protocol):
    def __call__(self, save_dir: Path, sensor: str, start: float, end: float, out_dir: Path) -> Path:
        """Write one clip of ``sensor``'s frames in ``[start, end)`` into ``out_dir`` and return its path.
        Raises :class:`ExportFailed` with a sentence for the user."""
        ...


class ExportFailed(Exception):
    pass


@dataclass(frozen=True)
class Camera:
    """A camera node: its thumbnail is ``<thumbnail_dir>/<thumbnail_name>`` (written by the node)."""

    node: str
    sensor_name: str
    thumbnail_name: str


@dataclass(frozen=True)
class Archive:
    """A save dir, named after the dumper node that writes it (URLs carry the name, never the path)."""

    name: str
    save_dir: Path


@dataclass(frozen=True)
class SiteLayout:
    cameras: tuple[Camera, ...] = ()
    archives: tuple[Archive, ...] = ()
    thumbnail_dir: Path | None = None

    def archive(self, name: str) -> Archive:
        for archive in self.archives:
            if archive.name == name:
                return archive
        raise BadRequest(f"no save dir named {name[:80]!r}; known: {', '.join(a.name for a in self.archives)}")


@dataclass(frozen=True)
class WebSources:
    """Everything the web reads. Every callable must be thread-safe (requests run on their own threads)."""

    status: Callable[[], dict[str, Any]]
    layout: Callable[[], SiteLayout]
    open_index: Callable[[Path], SegmentIndex | None]
    registry: CollectorRegistry | None = None
    health: Callable[[], tuple[int, dict[str, Any]]] | None = None
    exporter: Exporter | None = None
    export_tmp_dir: Path | None = None
    clock: Callable[[], float] = field(default=time.time)


def node_gauges(registry: CollectorRegistry | None) -> dict[str, dict[str, float]]:
    """Per node: ``frame_rate_hz`` (summed over its sensors) and ``last_progress_at``, when exported."""
    found: dict[str, dict[str, float]] = {}
    if registry is None:
        return found
    for family in registry.collect():
        if family.name not in (FRAME_RATE_METRIC, LAST_PROGRESS_METRIC):
            continue
        for sample in family.samples:
            node = sample.labels.get("node")
            if node is None or math.isnan(sample.value):
                continue
            values = found.setdefault(node, {})
            if family.name == FRAME_RATE_METRIC:
                values["frame_rate_hz"] = values.get("frame_rate_hz", 0.0) + sample.value
            else:
                values["last_progress_at"] = max(values.get("last_progress_at", 0.0), sample.value)
    return found


def parse_time(value: str, name: str) -> float:
    """Epoch seconds or ISO 8601 (no zone means UTC), exactly as ``msightd segments`` takes them."""
    try:
        return segments_cli.parse_time(value[:64])
    except argparse.ArgumentTypeError as exc:
        raise BadRequest(f"{name}: {exc}") from None


def time_window(query: dict[str, str] | Any, now: float, default_s: float) -> tuple[float, float]:
    """``start``/``end`` query parameters (default: the last ``default_s`` seconds up to now)."""
    end = parse_time(query["end"], "end") if query.get("end") else now
    start = parse_time(query["start"], "start") if query.get("start") else end - default_s
    if end <= start:
        raise BadRequest("end must be after start")
    return start, end


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
