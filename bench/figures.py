"""Arithmetic shared by the pipeline results, the floor and the report.

Both sides of the comparison must be rounded and divided the same way, and a figure that could not be
measured stays ``None`` all the way to the JSON (and prints as ``-``) rather than becoming a misleading 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def rounded(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None


def per_frame(cpu_s: float | None, frames: float) -> dict[str, Any]:
    """CPU seconds, the frames they were spent on, and the cost per frame (in s and ms)."""
    value = cpu_s / frames if cpu_s is not None and frames > 0 else None
    return {
        "cpu_s": rounded(cpu_s),
        "frames": frames,
        "cpu_s_per_frame": rounded(value, 6),
        "ms_per_frame": rounded(value * 1000 if value is not None else None, 3),
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    """A figure for the table: ``-`` where it could not be measured."""
    return format(value, spec) if value is not None else "-"
