"""Waiting for a condition with a deadline instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    error: type[Exception] = AssertionError,
) -> T:
    """Poll ``predicate`` until it returns something truthy; raise ``error`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
