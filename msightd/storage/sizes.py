"""Sizes as people write them in a config file: ``"500GB"``, ``"20GiB"``, ``1000000``, ``"10%"``.

Decimal units (kB, MB, GB, TB, PB: powers of 1000, what disk vendors and ``df -H`` use) and binary units
(KiB, MiB, GiB, TiB, PiB: powers of 1024, what ``df -h`` shows) are both accepted. A bare ``G`` or ``M`` is
refused: it means 10^9 to some and 2^30 to others, and the difference is 7 % of a disk.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_EXAMPLES = 'e.g. "500GB", "20GiB" or an integer number of bytes'


def parse_size(value: object, name: str = "size") -> int:
    """Bytes from an integer or a size string; ``ValueError`` naming ``name`` and what is allowed."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{name} must be a size ({_EXAMPLES}), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
        return value
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"{name} must be a size ({_EXAMPLES}), got {value!r}")
    number, unit = float(match.group(1)), match.group(2).lower() or "b"
    if unit not in _UNITS:
        amount, letter = match.group(1), unit.upper()
        hint = f' (write "{amount}{letter}B" or "{amount}{letter}iB")' if len(unit) == 1 else ""
        raise ValueError(
            f"{name}: unknown unit {match.group(2)!r} in {value!r}{hint}; units: kB MB GB TB, KiB MiB GiB TiB"
        )
    return math.floor(number * _UNITS[unit])


@dataclass(frozen=True)
class SpaceFloor:
    """Free space to keep: a number of bytes, or a fraction of the filesystem's size."""

    size_bytes: int | None = None
    fraction: float | None = None

    def bytes_for(self, filesystem_bytes: int) -> int:
        """The floor in bytes on a filesystem of ``filesystem_bytes``."""
        if self.fraction is not None:
            return math.ceil(self.fraction * filesystem_bytes)
        return self.size_bytes or 0

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction is not None else format_size(self.size_bytes or 0)


def parse_space_floor(value: object, name: str = "min_free_space") -> SpaceFloor:
    """A :class:`SpaceFloor` from ``"10%"`` (0 < p < 100), a size string or an integer of bytes."""
    if isinstance(value, str) and "%" in value:
        match = _PERCENT.match(value)
        if match is None or not 0 < float(match.group(1)) < 100:
            raise ValueError(f'{name} must be a percentage between 0 and 100 (e.g. "10%"), got {value!r}')
        return SpaceFloor(fraction=float(match.group(1)) / 100)
    try:
        return SpaceFloor(size_bytes=parse_size(value, name))
    except ValueError as exc:
        raise ValueError(f'{exc} (or a percentage of the filesystem, e.g. "10%")') from None


def format_size(size_bytes: int) -> str:
    """``1.65 GB``: decimal units, three significant digits, for logs and tables."""
    size = float(size_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
