"""Check segment pairs on disk: the JSON is readable, its MP4 exists, the MP4's SHA-256 is the one the JSON
records, the MP4 decodes to the end, and the frame count matches the JSON (its ``frame_count`` and its
frame list). Works from the files, not the catalog, so it also checks what the catalog does not know.
A segment MP4 without a JSON is incomplete by definition (reported, not a failure: retention sweeps it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from msightd.storage.catalog import MetadataError, is_segment_video, read_metadata
from msightd.storage.files import file_sha256


@dataclass(frozen=True)
class PairCheck:
    """The outcome for one pair; ``problems`` is empty when it is sound."""

    stem: str
    sensor_name: str | None
    first_capture_timestamp: float | None
    frame_count: int | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_pair(metadata_path: Path, decode: bool = True) -> PairCheck:
    """Check one pair, named by its JSON."""
    try:
        document = read_metadata(metadata_path)
    except (MetadataError, OSError) as exc:
        return PairCheck(metadata_path.stem, None, None, None, (str(exc),))
    problems: list[str] = []
    video_path = metadata_path.with_name(document["video_file"])
    declared = document["frame_count"]
    if len(document["frames"]) != declared:
        problems.append(f"JSON lists {len(document['frames'])} frames but says frame_count {declared}")
    try:
        digest = file_sha256(video_path)
    except FileNotFoundError:
        problems.append(f"{video_path.name} is missing")
    except OSError as exc:
        problems.append(f"{video_path.name} unreadable: {exc.strerror or exc}")
    else:
        if digest != document["video_sha256"]:
            problems.append(f"{video_path.name} SHA-256 {digest[:12]}... differs from the JSON's")
        elif decode:
            problems.extend(_decode_problems(video_path, declared))
    return PairCheck(
        metadata_path.stem,
        document["sensor_name"],
        float(document["first_capture_timestamp"]),
        declared,
        tuple(problems),
    )


def _decode_problems(video_path: Path, declared: int) -> list[str]:
    try:
        with av.open(str(video_path)) as container:
            decoded = sum(1 for _ in container.decode(container.streams.video[0]))
    except (av.FFmpegError, IndexError) as exc:
        return [f"{video_path.name} does not decode: {exc}"]
    if decoded != declared:
        return [f"{video_path.name} decodes to {decoded} frames, the JSON says {declared}"]
    return []


def verify_save_dir(
    save_dir: Path,
    sensor: str | None = None,
    start: float | None = None,
    end: float | None = None,
    decode: bool = True,
) -> Iterator[PairCheck]:
    """Check every pair in ``save_dir`` (one sensor's / overlapping ``[start, end)`` if given; a pair whose
    JSON is unreadable is always checked, since its sensor and time are unknown), in file-name order."""
    for metadata_path in sorted(save_dir.glob("*.json")):
        if metadata_path.name.startswith("."):
            continue
        if sensor is not None or start is not None or end is not None:
            try:
                document = read_metadata(metadata_path)
            except (MetadataError, OSError):
                document = None
            if document is not None and not _selected(document, sensor, start, end):
                continue
        yield verify_pair(metadata_path, decode)


def _selected(document: dict[str, Any], sensor: str | None, start: float | None, end: float | None) -> bool:
    first, last = float(document["first_capture_timestamp"]), float(document["last_capture_timestamp"])
    return (
        (sensor is None or document["sensor_name"] == sensor)
        and (start is None or last >= start)
        and (end is None or first < end)
    )


def incomplete_videos(save_dir: Path) -> list[str]:
    """Segment MP4s without their JSON."""
    return sorted(
        path.name
        for path in save_dir.glob("*.mp4")
        if is_segment_video(path.name) and not path.with_suffix(".json").exists()
    )
