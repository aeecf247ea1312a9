"""Capped exponential backoff, shared by camera reconnects, broker reconnects and node restarts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays ``initial_s, 2*initial_s, ...`` up to ``max_s``; :meth:`reset` after a success.

    Not thread-safe: one owner per instance.
    """

    initial_s: float = 0.25
    max_s: float = 2.0
    factor: float = 2.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.initial_s * (self.factor**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
