"""Video local dumper node: write each segment as ``<sensor>_<YYYYmmdd_HHMMSS_ffffff>.mp4`` + ``.json``.

Files are written so that a crash, a power cut or a full disk never leaves a partial file under a
final name: each file goes to a hidden temp file in the save directory, is fsynced, then hard-linked
to its final name (``link`` fails if the name exists, so nothing is ever overwritten) and the
directory is fsynced. The MP4 lands before its JSON, so a JSON always describes a complete MP4.

A segment that cannot be written (disk full, read-only, directory gone) stays in memory, unacked, and
is retried with backoff while new segments keep arriving; the node alerts with one log line per
outage and a counter.

Sensor names come from messages and are untrusted: see :func:`safe_sensor_name`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from msightd import __version__
from msightd.backoff import Backoff
from msightd.bus import Delivery
from msightd.messages import MalformedMessage, SegmentMessage, decode_segment
from msightd.nodes.base import (
    EXIT_CONFIG,
    EXIT_OK,
    ConfigError,
    MalformedMessageReporter,
    NodeRuntime,
    PeriodicSummary,
    consume,
)

MAX_SENSOR_NAME_CHARS = 64
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_TEMP_PREFIX = ".msightd-"
_TEMP_NAME = re.compile(r"^\.msightd-(\d+)-.*\.tmp$")


@dataclass(frozen=True)
class DumperConfig:
    """Options of the dumper (the ``msight_launch_video_local_dumper`` flags, snake_case)."""

    name: str
    subscribe_topic: str
    save_dir: str
    max_pending_segments: int = 100

    def validate(self) -> None:
        if not self.save_dir:
            raise ConfigError("save_dir must not be empty")
        if self.max_pending_segments < 1:
            raise ConfigError(f"max_pending_segments must be >= 1, got {self.max_pending_segments}")


def safe_sensor_name(name: str) -> str:
    """A file-name piece that cannot leave the save directory.

    Characters other than ``A-Z a-z 0-9 . _ -`` become ``_``, leading dots are removed (no ``..``, no
    hidden files), the result is cut to 64 characters, and an empty result becomes ``unnamed``. When
    anything had to change, an 8-hex-digit hash of the original name is appended so that two different
    names never share files (``cam/1`` and ``cam_1`` stay apart).
    """
    cleaned = _UNSAFE_CHARS.sub("_", name).lstrip(".")[:MAX_SENSOR_NAME_CHARS] or "unnamed"
    if cleaned == name:
        return cleaned
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: MAX_SENSOR_NAME_CHARS - 9]}-{digest}"


def segment_stem(sensor_name: str, capture_timestamp: float) -> str:
    """``<safe sensor>_<first frame's capture time in UTC, to the microsecond>``."""
    when = datetime.fromtimestamp(capture_timestamp, UTC)
    return f"{safe_sensor_name(sensor_name)}_{when:%Y%m%d_%H%M%S_%f}"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")


def segment_metadata(segment: SegmentMessage, video_file: str, sha256: str) -> dict[str, Any]:
    """The JSON written beside each MP4."""
    return {
        "sensor_name": segment.sensor_name,
        "device_name": segment.device_name,
        "video_file": video_file,
        "video_size_bytes": len(segment.video),
        "video_sha256": sha256,
        "codec": segment.codec,
        "fps": segment.fps,
        "width": segment.width,
        "height": segment.height,
        "frame_count": segment.frame_count,
        "segment_frame_id": segment.frame_id,
        "first_capture_timestamp": segment.capture_timestamps[0],
        "last_capture_timestamp": segment.capture_timestamps[-1],
        "first_capture_time": _iso(segment.capture_timestamps[0]),
        "last_capture_time": _iso(segment.capture_timestamps[-1]),
        "frames": [
            {"frame_id": frame_id, "capture_timestamp": stamp, "capture_time": _iso(stamp)}
            for frame_id, stamp in zip(segment.frame_ids, segment.capture_timestamps, strict=True)
        ],
        "segment_creation_timestamp": segment.creation_timestamp,
        "written_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "time_zone": "UTC",
        "writer": f"msightd {__version__}",
    }


@dataclass(frozen=True)
class WrittenSegment:
    video_path: Path
    metadata_path: Path
    bytes_written: int
    duplicate: bool


class SegmentWriter:
    """Durable, never-overwriting writes of segments into one directory. One owner thread."""

    def __init__(self, save_dir: Path) -> None:
        self.save_dir = save_dir
        self._counter = 0

    def prepare(self) -> None:
        """Create the directory and remove temp files left by dead writers."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.save_dir.iterdir():
            match = _TEMP_NAME.match(entry.name)
            if match and not _pid_alive(int(match.group(1))):
                entry.unlink(missing_ok=True)

    def write(self, segment: SegmentMessage) -> WrittenSegment:
        """Write MP4 then JSON; a redelivered identical segment is recognised, not written twice."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(segment.video).hexdigest()
        base = segment_stem(segment.sensor_name, segment.capture_timestamp)
        for attempt in range(1000):
            stem = base if attempt == 0 else f"{base}_{attempt}"
            video_path = self.save_dir / f"{stem}.mp4"
            metadata_path = self.save_dir / f"{stem}.json"
            if video_path.exists():
                if _file_sha256(video_path) != digest:
                    continue  # a different segment owns this name: never overwrite it
                written = 0
                if not metadata_path.exists():
                    written = self._write_new(metadata_path, _metadata_bytes(segment, video_path.name, digest))
                return WrittenSegment(video_path, metadata_path, written, duplicate=written == 0)
            written = self._write_new(video_path, segment.video)
            written += self._write_new(metadata_path, _metadata_bytes(segment, video_path.name, digest))
            return WrittenSegment(video_path, metadata_path, written, duplicate=False)
        raise FileExistsError(errno.EEXIST, f"1000 different segments already named {base}*", str(self.save_dir))

    def _write_new(self, final_path: Path, content: bytes) -> int:
        self._counter += 1
        temp_path = self.save_dir / f"{_TEMP_PREFIX}{os.getpid()}-{self._counter}-{final_path.name}.tmp"
        try:
            fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(temp_path, final_path)
        finally:
            temp_path.unlink(missing_ok=True)
        _fsync_dir(self.save_dir)
        return len(content)


def _metadata_bytes(segment: SegmentMessage, video_file: str, digest: str) -> bytes:
    return (json.dumps(segment_metadata(segment, video_file, digest), indent=2) + "\n").encode()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_WRITE_HINTS = {
    errno.ENOSPC: "disk full: free space in the save directory",
    errno.EDQUOT: "disk quota exceeded: free space or raise the quota",
    errno.EROFS: "save directory is on a read-only file system",
    errno.EACCES: "no permission to write the save directory",
    errno.ENOENT: "save directory vanished and cannot be recreated",
}


@dataclass
class PendingSegment:
    segment: SegmentMessage
    ack: Any


class VideoLocalDumperNode:
    kind: ClassVar[str] = "video_local_dumper"

    def __init__(self, config: DumperConfig, runtime: NodeRuntime) -> None:
        config.validate()
        self._config = config
        self._runtime = runtime
        self._metrics = runtime.metrics
        self._writer = SegmentWriter(Path(config.save_dir).expanduser().absolute())
        self._pending: deque[PendingSegment] = deque()
        self._backoff = Backoff(0.5, 10.0)
        self._retry_at = 0.0
        self._failing_since: float | None = None
        self._summary = PeriodicSummary(runtime)
        self._malformed = MalformedMessageReporter(runtime)

    def run(self) -> int:
        log = self._runtime.log
        try:
            self._writer.prepare()
        except OSError as exc:
            log.error(
                "save_dir_unusable",
                save_dir=str(self._writer.save_dir),
                error=exc.strerror or str(exc),
                msg=f"cannot use save directory {self._writer.save_dir}: {exc.strerror or exc}; "
                "pass a writable --save-dir",
            )
            return EXIT_CONFIG
        subscription = self._runtime.bus.subscribe([self._config.subscribe_topic])
        log.info("dumper_started", subscribe_topic=self._config.subscribe_topic, save_dir=str(self._writer.save_dir))
        try:
            consume(self._runtime, subscription, self._accept, self._tick)
        finally:
            subscription.close()
            self._retry_at = 0.0
            self._write_pending()
            if self._pending:
                log.error(
                    "segments_unwritten_on_exit",
                    segments=len(self._pending),
                    msg=f"{len(self._pending)} segments could not be written before exit",
                )
        return EXIT_OK

    def _tick(self) -> None:
        self._write_pending()
        self._summary.maybe_log(pending_segments=len(self._pending))

    def _accept(self, delivery: Delivery) -> None:
        try:
            segment = decode_segment(delivery.payload)
        except MalformedMessage as error:
            self._malformed.report(delivery.topic, error)
            delivery.ack()
            return
        if len(self._pending) >= self._config.max_pending_segments:
            dropped = self._pending.popleft()
            sensor = self._metrics.sensor(dropped.segment.sensor_name)
            self._metrics.frames_dropped.labels(self._metrics.node, sensor, "write_backlog_full").inc(
                dropped.segment.frame_count
            )
            self._runtime.log.error("segment_dropped", sensor=dropped.segment.sensor_name, reason="write backlog full")
        self._pending.append(PendingSegment(segment, delivery.ack))
        self._metrics.pending_segments.labels(self._metrics.node).set(len(self._pending))
        self._write_pending()  # at once, unless a failed write is backing off (then the tick retries)

    def _write_pending(self) -> None:
        while self._pending and time.monotonic() >= self._retry_at:
            item = self._pending[0]
            segment = item.segment
            sensor = self._metrics.sensor(segment.sensor_name)
            try:
                written = self._writer.write(segment)
            except OSError as exc:
                self._write_failed(segment, sensor, exc)
                return
            self._pending.popleft()
            item.ack()
            self._write_recovered()
            self._metrics.pending_segments.labels(self._metrics.node).set(len(self._pending))
            self._metrics.bytes_written.labels(self._metrics.node, sensor).inc(written.bytes_written)
            if written.duplicate:
                self._runtime.log.info(
                    "segment_duplicate_skipped", sensor=segment.sensor_name, file=written.video_path.name
                )
                continue
            self._metrics.segments_written.labels(self._metrics.node, sensor).inc()
            latency = max(0.0, time.time() - segment.capture_timestamps[-1])
            self._metrics.capture_to_disk.labels(self._metrics.node).observe(latency)
            self._runtime.log.info(
                "segment_written",
                sensor=segment.sensor_name,
                file=written.video_path.name,
                frames=segment.frame_count,
                size_bytes=len(segment.video),
                capture_to_disk_seconds=round(latency, 3),
            )

    def _write_failed(self, segment: SegmentMessage, sensor: str, exc: OSError) -> None:
        self._metrics.write_errors.labels(self._metrics.node, sensor).inc()
        delay = self._backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            hint = _WRITE_HINTS.get(exc.errno or 0, "check the save directory")
            self._runtime.log.error(
                "segment_write_failed",
                sensor=segment.sensor_name,
                save_dir=str(self._writer.save_dir),
                error=exc.strerror or str(exc),
                pending_segments=len(self._pending),
                msg=f"cannot write segment: {exc.strerror or exc} ({hint}); kept in memory, retrying",
            )

    def _write_recovered(self) -> None:
        if self._failing_since is not None:
            self._runtime.log.info(
                "segment_writes_recovered", outage_seconds=round(time.monotonic() - self._failing_since, 3)
            )
            self._failing_since = None
        self._backoff.reset()
