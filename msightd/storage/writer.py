"""Durable, never-overwriting writes of segments into one directory.

Each file goes to a hidden temp file in the save directory, is fsynced, then hard-linked to its final name
(``link`` fails if the name exists, so nothing is ever overwritten) and the directory is fsynced. The MP4
lands before its JSON, so a JSON always describes a complete MP4: a crash, a power cut or a full disk never
leaves a partial file under a final name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from msightd.messages import SegmentMessage
from msightd.storage.files import file_sha256, fsync_dir
from msightd.storage.metadata import metadata_bytes
from msightd.storage.naming import segment_stem

_TEMP_PREFIX = ".msightd-"
_TEMP_NAME = re.compile(r"^\.msightd-(\d+)-.*\.tmp$")


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
        """Write MP4 then JSON; a redelivered segment is recognised, not written twice: by its SHA-256, or,
        when a re-encode of the same frames came out different, by the frames its JSON lists."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(segment.video).hexdigest()
        base = segment_stem(segment.sensor_name, segment.capture_timestamp)
        for attempt in range(1000):
            stem = base if attempt == 0 else f"{base}_{attempt}"
            video_path = self.save_dir / f"{stem}.mp4"
            metadata_path = self.save_dir / f"{stem}.json"
            if video_path.exists():
                if file_sha256(video_path) != digest and not _same_frames(metadata_path, segment):
                    continue  # a different segment owns this name: never overwrite it
                written = 0
                if not metadata_path.exists():
                    written = self._write_new(metadata_path, metadata_bytes(segment, video_path.name, digest))
                return WrittenSegment(video_path, metadata_path, written, duplicate=written == 0)
            written = self._write_new(video_path, segment.video)
            written += self._write_new(metadata_path, metadata_bytes(segment, video_path.name, digest))
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
        fsync_dir(self.save_dir)
        return len(content)


def _same_frames(metadata_path: Path, segment: SegmentMessage) -> bool:
    """Does the JSON already written describe this segment (same sensor, same frames)? An aggregator that
    restarted re-encodes redelivered frames, and encoder output is not guaranteed byte-identical."""
    try:
        meta = json.loads(metadata_path.read_bytes())
        frame_ids = [frame["frame_id"] for frame in meta["frames"]]
        return bool(
            meta["sensor_name"] == segment.sensor_name
            and meta["segment_frame_id"] == segment.frame_id
            and frame_ids == list(segment.frame_ids)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no JSON (yet) or not ours: only identical bytes prove a duplicate


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
