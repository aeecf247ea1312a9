"""Segment pairs as files: what a dumper JSON must hold, and the catalog row and frame list read from it.

A pair is ``<stem>.mp4`` + ``<stem>.json`` in a save directory; the JSON is written only once the MP4 is
complete, so a JSON whose MP4 is missing, or that lacks what a segment JSON holds, is not a pair (an
exported clip's JSON, for one, is not). Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


class MetadataError(ValueError):
    """A JSON file is not a complete segment's metadata (the message names the file and why)."""


@dataclass(frozen=True)
class SegmentRecord:
    """One segment pair as the catalog knows it. Times are epoch seconds (UTC)."""

    stem: str
    sensor_name: str
    video_file: str
    metadata_file: str
    first_capture_timestamp: float
    last_capture_timestamp: float
    frame_count: int
    video_size_bytes: int
    metadata_size_bytes: int
    video_sha256: str
    codec: str
    width: int
    height: int
    fps: float
    written_at: float
    uploaded_at: float | None = None
    upload_key: str | None = None

    @property
    def size_bytes(self) -> int:
        """Bytes of the pair on disk (MP4 + JSON), what retention counts."""
        return self.video_size_bytes + self.metadata_size_bytes


@dataclass(frozen=True)
class FrameRecord:
    frame_id: int
    capture_timestamp: float


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "sensor_name": str,
    "video_file": str,
    "video_sha256": str,
    "codec": str,
    "width": int,
    "height": int,
    "fps": (int, float),
    "frame_count": int,
    "first_capture_timestamp": (int, float),
    "last_capture_timestamp": (int, float),
    "frames": list,
}


#: ``<safe sensor>_<YYYYmmdd_HHMMSS_ffffff>[_N]``, the stems the dumper gives segment pairs.
_SEGMENT_STEM = r"[A-Za-z0-9_][A-Za-z0-9._-]*_\d{8}_\d{6}_\d{6}(?:_\d+)?"
_SEGMENT_VIDEO = re.compile(rf"^{_SEGMENT_STEM}\.mp4$")
_SEGMENT_METADATA = re.compile(rf"^{_SEGMENT_STEM}\.json$")


def is_segment_video(name: str) -> bool:
    """Whether a file name is one the dumper gives segment videos (hidden temp files are not)."""
    return _SEGMENT_VIDEO.match(name) is not None


def is_segment_metadata(name: str) -> bool:
    """Whether a file name is one the dumper gives segment JSON files: a bare name, never a path."""
    return _SEGMENT_METADATA.match(name) is not None


def metadata_files(save_dir: Path) -> list[Path]:
    """``*.json`` directly in ``save_dir``, without hidden files (temp files start with a dot)."""
    return [path for path in save_dir.glob("*.json") if not path.name.startswith(".")]


def read_metadata(metadata_path: Path) -> dict[str, Any]:
    """A segment JSON, checked to hold what the catalog needs (``MetadataError`` otherwise)."""
    try:
        document = json.loads(metadata_path.read_bytes())
    except ValueError as exc:
        raise MetadataError(f"{metadata_path.name}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise MetadataError(f"{metadata_path.name}: not a segment's metadata (not an object)")
    for key, kind in _REQUIRED.items():
        if not isinstance(document.get(key), kind) or isinstance(document.get(key), bool):
            raise MetadataError(f"{metadata_path.name}: not a segment's metadata ({key!r} missing or of wrong type)")
    video_file = document["video_file"]
    if "/" in video_file or video_file.startswith("."):
        raise MetadataError(f"{metadata_path.name}: video_file {video_file!r} is not a plain file name")
    return document


def record_from_metadata(metadata_path: Path) -> SegmentRecord:
    """The catalog row of a pair, from its JSON and the sizes of both files on disk."""
    document = read_metadata(metadata_path)
    video_path = metadata_path.with_name(document["video_file"])
    try:
        video_size = video_path.stat().st_size
    except FileNotFoundError:
        raise MetadataError(f"{metadata_path.name}: its video {video_path.name} is missing") from None
    metadata_stat = metadata_path.stat()
    return SegmentRecord(
        stem=metadata_path.stem,
        sensor_name=document["sensor_name"],
        video_file=video_path.name,
        metadata_file=metadata_path.name,
        first_capture_timestamp=float(document["first_capture_timestamp"]),
        last_capture_timestamp=float(document["last_capture_timestamp"]),
        frame_count=document["frame_count"],
        video_size_bytes=video_size,
        metadata_size_bytes=metadata_stat.st_size,
        video_sha256=document["video_sha256"],
        codec=document["codec"],
        width=document["width"],
        height=document["height"],
        fps=float(document["fps"]),
        written_at=_epoch(document.get("written_at"), metadata_stat.st_mtime),
    )


def read_frames(metadata_path: Path) -> list[FrameRecord]:
    """The frames a segment JSON lists, in its order."""
    return frames_of(read_metadata(metadata_path), metadata_path.name)


def frames_of(document: dict[str, Any], name: str) -> list[FrameRecord]:
    """The frames segment JSON ``document`` (file ``name``, for the error) lists, in its order."""
    try:
        return [FrameRecord(int(frame["frame_id"]), float(frame["capture_timestamp"])) for frame in document["frames"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(f"{name}: unusable frame list ({exc})") from None


def capture_clock_of(document: dict[str, Any]) -> str:
    """Whose clock a segment JSON's capture times are (JSON written before msightd said: arrival)."""
    return str(document.get("capture_clock") or "arrival")


def scan_metadata(save_dir: Path) -> tuple[list[SegmentRecord], list[str]]:
    """Every complete pair in ``save_dir`` (read from the JSON files), and one line per unusable JSON."""
    records, problems = [], []
    for path in sorted(metadata_files(save_dir)):
        try:
            records.append(record_from_metadata(path))
        except (MetadataError, OSError) as exc:
            problems.append(str(exc))
    return records, problems


def _epoch(iso_time: object, fallback: float) -> float:
    if isinstance(iso_time, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(iso_time).timestamp()
    return fallback
