"""Where a segment pair goes in the bucket, and in which form its JSON travels.

Two layouts:

* ``utc`` (the daemon's default): ``{prefix}/{device}/{sensor}/{YYYY}/{MM}/{DD}/{HH}/<file name on disk>``,
  the hour folder taken from the segment's first capture time in UTC (the same instant the file name
  carries), and the dumper's JSON uploaded as it is on disk, beside its MP4.
* ``msight`` (``msight_launch_aws_video_pusher``'s default, what MSight's own pusher writes):
  ``[prefix/]{device}/{sensor}/{YYYY-MM-DD}/{HH}/{int(first_capture)}_{int(last_capture)}.mp4|.json``, the
  date and hour from the segment's *creation* time in the uploader's *local* time zone, exactly as MSight
  (``datetime.fromtimestamp(creation_timestamp)``), and the JSON is MSight's: the segment message without
  its video (``VideoData.to_dict()`` minus ``video``, dumped with ``json.dumps`` defaults).

Both are deterministic: the same segment always maps to the same keys, so a retried upload overwrites its
own object instead of adding a second one. Device and sensor names are untrusted text and pass through
:func:`safe_sensor_name` (unchanged for ordinary names, so MSight keys stay byte-identical).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from msightd.messages import VIDEO_DATA_TYPE
from msightd.storage.naming import safe_sensor_name

KEY_LAYOUTS = ("utc", "msight")


@dataclass(frozen=True)
class SegmentKeys:
    """The object keys of one segment pair."""

    video: str
    metadata: str

    def disambiguated(self, tag: str) -> SegmentKeys:
        """The same keys with ``-<tag>`` before the extension, for a segment whose key another, different
        segment already holds (MSight's keys have one-second resolution)."""
        return SegmentKeys(_insert_tag(self.video, tag), _insert_tag(self.metadata, tag))


def _insert_tag(key: str, tag: str) -> str:
    stem, dot, extension = key.rpartition(".")
    return f"{stem}-{tag}{dot}{extension}"


def normalize_prefix(prefix: str) -> str:
    """``prefix`` without leading/trailing slashes; ``ValueError`` naming the problem if it is unusable."""
    cleaned = prefix.strip("/")
    if not cleaned:
        return ""
    parts = cleaned.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"prefix {prefix!r} has an empty, '.' or '..' path element")
    if any(ord(char) < 32 or char in "\\\x7f" for char in cleaned):
        raise ValueError(f"prefix {prefix!r} holds control characters or backslashes")
    return cleaned


def _join(prefix: str, *parts: str) -> str:
    return "/".join((prefix, *parts)) if prefix else "/".join(parts)


def utc_keys(prefix: str, device: str, metadata: Mapping[str, Any], metadata_file: str) -> SegmentKeys:
    """Keys of the ``utc`` layout for the pair described by a dumper JSON ``metadata``."""
    when = datetime.fromtimestamp(float(metadata["first_capture_timestamp"]), UTC)
    folder = _join(
        prefix,
        safe_sensor_name(device),
        safe_sensor_name(str(metadata["sensor_name"])),
        f"{when:%Y}",
        f"{when:%m}",
        f"{when:%d}",
        f"{when:%H}",
    )
    return SegmentKeys(f"{folder}/{metadata['video_file']}", f"{folder}/{metadata_file}")


def msight_keys(prefix: str, device: str, metadata: Mapping[str, Any], tz: tzinfo | None = None) -> SegmentKeys:
    """Keys of MSight's layout; ``tz`` None is the process's local time zone, as MSight does."""
    created = float(metadata.get("segment_creation_timestamp") or metadata["last_capture_timestamp"])
    when = datetime.fromtimestamp(created, tz)
    first = int(float(metadata["first_capture_timestamp"]))
    last = int(float(metadata["last_capture_timestamp"]))
    folder = _join(
        prefix,
        safe_sensor_name(device),
        safe_sensor_name(str(metadata["sensor_name"])),
        when.strftime("%Y-%m-%d"),
        when.strftime("%H"),
    )
    return SegmentKeys(f"{folder}/{first}_{last}.mp4", f"{folder}/{first}_{last}.json")


def segment_keys(layout: str, prefix: str, device: str, metadata: Mapping[str, Any], metadata_file: str) -> SegmentKeys:
    if layout == "msight":
        return msight_keys(prefix, device, metadata)
    if layout == "utc":
        return utc_keys(prefix, device, metadata, metadata_file)
    raise ValueError(f"key_layout must be one of {', '.join(KEY_LAYOUTS)}, got {layout!r}")


def msight_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """MSight's JSON for a segment (its ``VideoData`` message without ``video``), rebuilt from the dumper's
    JSON: MSight's fields in its order, then the fields msightd adds to the message (``fps``, ``codec``,
    ``width``, ``height``, ``frame_count``), which MSight readers ignore."""
    frames = metadata["frames"]
    return {
        "data_type": VIDEO_DATA_TYPE,
        "sensor_name": metadata["sensor_name"],
        "capture_timestamp": metadata["first_capture_timestamp"],
        "creation_timestamp": metadata.get("segment_creation_timestamp"),
        "frame_id": metadata.get("segment_frame_id"),
        "device_name": metadata.get("device_name"),
        "detection_results": None,
        "frame_ids": [frame["frame_id"] for frame in frames],
        "capture_timestamps": [frame["capture_timestamp"] for frame in frames],
        "fps": metadata.get("fps"),
        "codec": metadata.get("codec"),
        "width": metadata.get("width"),
        "height": metadata.get("height"),
        "frame_count": metadata.get("frame_count"),
    }


def metadata_object(layout: str, metadata: Mapping[str, Any], file_bytes: bytes) -> bytes:
    """The bytes uploaded as the segment's JSON: the file as on disk (``utc``) or MSight's form (``msight``)."""
    if layout == "msight":
        return json.dumps(msight_metadata(metadata)).encode()
    return file_bytes
