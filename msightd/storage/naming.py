"""Segment file names: ``<safe sensor>_<YYYYmmdd_HHMMSS_ffffff>`` in UTC, from untrusted sensor names.

Sensor names come from messages; nothing in them may lead a file out of its directory (see
:func:`safe_sensor_name`). Times are UTC: boxes in several time zones, and DST, would make local names
ambiguous.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

MAX_SENSOR_NAME_CHARS = 64
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


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


def iso_utc(timestamp: float) -> str:
    """``2026-01-24T11:28:45.649586+00:00``: how segment JSON files write times."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")
