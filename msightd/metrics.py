"""Prometheus metrics of one node, and the sliding-window frame rate.

Each node owns a :class:`NodeMetrics` built on a registry it is given (no module-level metric objects).
Under the daemon, children run with ``PROMETHEUS_MULTIPROC_DIR`` set, so values land in per-process files
that the daemon aggregates on ``/metrics``; counters of a node that died keep counting in the sum, and
its live gauges are removed when the supervisor marks the process dead.

Labels are only ``node``, ``sensor``, ``topic`` and a bounded ``reason``. Sensor names come from
messages, so :class:`BoundedLabels` caps how many distinct ones get their own series.
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from msightd import __version__

NAMESPACE = "msightd"
#: Distinct sensors with their own series per node; further ones are counted under ``other``.
MAX_SENSOR_LABELS = 64
RATE_WINDOW_S = 10.0
#: How often a frame-rate gauge is refreshed while frames flow.
RATE_REPORT_INTERVAL_S = 1.0

_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_UPLOAD_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_BYTES_BUCKETS = tuple(float(2**p) for p in range(14, 30, 2))  # 16 KiB .. 512 MiB


class BoundedLabels:
    """Maps free-form label values onto at most ``limit`` distinct values plus ``other``."""

    def __init__(self, limit: int = MAX_SENSOR_LABELS) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        value = value[:64] or "unnamed"
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return "other"


class RateMeter:
    """Events per second over the last ``window_s`` seconds. Not thread-safe; one owner."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window_s = window_s
        self._stamps: deque[float] = deque()
        self._started = time.monotonic()
        self.next_report = 0.0  # when the owner next publishes rate() (see NodeMetrics.mark_frame)

    def mark(self, now: float | None = None) -> None:
        self._stamps.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._stamps and self._stamps[0] < now - self._window_s:
            self._stamps.popleft()
        span = min(self._window_s, max(now - self._started, 1e-9))
        return len(self._stamps) / span


class NodeMetrics:
    """Every metric a node may update. Thread-safe (prometheus_client metrics are)."""

    def __init__(self, node: str, registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry if registry is not None else CollectorRegistry()
        self.sensor = BoundedLabels()
        self._rates: dict[str, RateMeter] = {}

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, ("node", *labels), namespace=NAMESPACE, registry=self.registry)

        def node_gauge(name: str, doc: str) -> Gauge:
            """One series per node, summed over the node's live processes (there is one)."""
            return Gauge(name, doc, ("node",), namespace=NAMESPACE, registry=self.registry, multiprocess_mode="livesum")

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, ("node",), namespace=NAMESPACE, registry=self.registry, buckets=buckets)

        self.frames_read = counter("frames_read", "Frames read from a camera or file.", ("sensor",))
        self.frames_published = counter("frames_published", "Frames published to a topic.", ("sensor", "topic"))
        self.frames_received = counter("frames_received", "Frames received from a topic.", ("sensor", "topic"))
        self.frames_dropped = counter("frames_dropped", "Frames dropped, by reason.", ("sensor", "reason"))
        self.frames_inline = counter(
            "frames_sent_inline",
            "Frames meant for a shared-memory ring sent inline (JPEG) instead, by reason.",
            ("sensor", "reason"),
        )
        self.frame_rate = Gauge(
            "frame_rate_hertz",
            f"Frames per second over the last {RATE_WINDOW_S:g} s.",
            ("node", "sensor"),
            namespace=NAMESPACE,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.segments_encoded = counter("segments_encoded", "Video segments encoded.", ("sensor",))
        self.segments_published = counter("segments_published", "Video segments published.", ("sensor", "topic"))
        self.segments_written = counter("segments_written", "Video segments written to disk.", ("sensor",))
        self.segments_indexed = counter(
            "segments_indexed", "Segments a recording camera node wrote into the save dir, catalogued.", ("sensor",)
        )
        self.bytes_written = counter("written_bytes", "Bytes written to disk (MP4 and JSON).", ("sensor",))
        self.encode_duration = histogram(
            "segment_encode_duration_seconds", "Wall time to encode one segment.", _SECONDS_BUCKETS
        )
        self.segment_size = histogram("segment_size_bytes", "Size of encoded segments.", _BYTES_BUCKETS)
        self.capture_to_disk = histogram(
            "capture_to_disk_latency_seconds",
            "From a segment's last frame capture to its files being durable on disk.",
            _SECONDS_BUCKETS,
        )
        self.rtsp_reconnects = counter("rtsp_reconnects", "Camera (re)connection attempts after a loss.", ("sensor",))
        self.source_gaps = counter("source_gaps", "Camera outages (no frames) that ended.", ("sensor",))
        self.source_gap_seconds = counter("source_gap_seconds", "Seconds without frames from a camera.", ("sensor",))
        self.malformed_messages = counter("malformed_messages", "Unusable messages received.", ("topic", "reason"))
        self.publish_errors = counter("bus_publish_errors", "Failed publishes to the broker.", ("topic",))
        self.write_errors = counter("write_errors", "Failed attempts to write a segment to disk.", ("sensor",))
        self.pending_segments = node_gauge(
            "pending_segments", "Segments accepted but not yet durable (encoding or awaiting a write retry)."
        )
        self.segments_deleted = counter(
            "segments_deleted", "Segment pairs deleted by retention, by reason.", ("reason",)
        )
        self.storage_used_bytes = node_gauge(
            "storage_used_bytes", "Bytes of the segment pairs in the node's save directory."
        )
        self.storage_free_bytes = node_gauge(
            "storage_free_bytes",
            "Free bytes (for unprivileged writers) on the filesystem of the node's save directory.",
        )
        self.save_dir_usable = node_gauge(
            "save_dir_usable",
            "1 while the node's save directory takes segments, 0 while it is missing, unwritable or unmounted.",
        )
        self.uploads = counter(
            "uploads",
            "Segment uploads to the object store, by result (uploaded, already_present, failed).",
            ("result",),
        )
        self.uploaded_bytes = counter("uploaded_bytes", "Bytes sent to the object store (MP4s and JSONs).", ())
        self.upload_duration = histogram(
            "upload_duration_seconds", "Wall time to upload and verify one segment pair.", _UPLOAD_SECONDS_BUCKETS
        )
        self.upload_backlog_segments = node_gauge("upload_backlog_segments", "Segments on disk not yet uploaded.")
        self.upload_backlog_bytes = node_gauge("upload_backlog_bytes", "Bytes of segments not yet uploaded.")
        self.upload_oldest_pending_age = node_gauge(
            "upload_oldest_pending_age_seconds",
            "Age of the oldest segment not yet uploaded (from its first capture; 0 when none is pending).",
        )
        build = Gauge(
            "build_info",
            "msightd version running this node.",
            ("node", "version"),
            namespace=NAMESPACE,
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        build.labels(node, __version__).set(1)

    def mark_frame(self, sensor_label: str) -> None:
        """Count one frame in the sliding-window rate of ``sensor_label`` (an already bounded label); the
        gauge follows at most once a second (a scrape every few seconds sees no difference, and the
        per-frame cost of a multiprocess gauge write is saved)."""
        meter = self._rates.get(sensor_label)
        if meter is None:
            meter = self._rates[sensor_label] = RateMeter()
        now = time.monotonic()
        meter.mark(now)
        if now >= meter.next_report:
            meter.next_report = now + RATE_REPORT_INTERVAL_S
            self.frame_rate.labels(self.node, sensor_label).set(meter.rate(now))

    def refresh_rates(self) -> dict[str, float]:
        """Recompute every rate (so it decays to 0 when frames stop); returns them for summary logs."""
        rates = {sensor: meter.rate() for sensor, meter in self._rates.items()}
        for sensor, rate in rates.items():
            self.frame_rate.labels(self.node, sensor).set(rate)
        return rates
