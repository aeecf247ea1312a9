"""The JSON written beside each MP4: every frame's id and capture time, and what the video holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from msightd import __version__
from msightd.messages import SegmentMessage
from msightd.storage.naming import iso_utc


def segment_metadata(segment: SegmentMessage, video_file: str, sha256: str) -> dict[str, Any]:
    """The JSON written beside each MP4. ``frames`` are in the video's order; first and last capture times are
    the earliest and latest: by the camera's clock, a stream with B-frames lists frames out of time order."""
    first, last = min(segment.capture_timestamps), max(segment.capture_timestamps)
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
        "first_capture_timestamp": first,
        "last_capture_timestamp": last,
        "first_capture_time": iso_utc(first),
        "last_capture_time": iso_utc(last),
        "frames": [
            {"frame_id": frame_id, "capture_timestamp": stamp, "capture_time": iso_utc(stamp)}
            for frame_id, stamp in zip(segment.frame_ids, segment.capture_timestamps, strict=True)
        ],
        # whose clock the capture times are: "arrival" (this host's) or "camera" (RTCP sender reports)
        "capture_clock": str(segment.extra.get("capture_clock", "arrival")),
        "segment_creation_timestamp": segment.creation_timestamp,
        "written_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "time_zone": "UTC",
        "writer": f"msightd {__version__}",
    }


def metadata_bytes(segment: SegmentMessage, video_file: str, digest: str) -> bytes:
    return (json.dumps(segment_metadata(segment, video_file, digest), indent=2) + "\n").encode()
