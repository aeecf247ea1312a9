"""Whose clock stamps one connection's frames when the camera's own is asked for (``capture_clock = "camera"``).

The camera's RTCP sender reports map its RTP timestamps to its wall clock
(:class:`~msightd.media.rtp_depacketizer.SenderReport`). Whether that clock can be used is decided once per
connection, on its first frame: the frame must have arrived, by this host's clock, within
:data:`~msightd.media.formats.CAMERA_CLOCK_OFFSET_RANGE_S` of when the camera says it was sampled (a camera
without NTP is hours or decades off), and a report must come within
:data:`~msightd.media.formats.SENDER_REPORT_WAIT_S`. Otherwise the connection's frames keep their arrival
times. Either way every frame of a connection has one clock, so a segment (which a reconnection ends)
never mixes two.

Later reports are followed while they agree with the one in use; one that moves the camera's clock by more
than :data:`~msightd.media.formats.CAMERA_CLOCK_STEP_LIMIT_S` (NTP stepping it, a reset) is ignored and
reported (once for each step, not for every report that repeats it), so capture times never jump inside a
connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from msightd.media.formats import CAMERA_CLOCK_OFFSET_RANGE_S, CAMERA_CLOCK_STEP_LIMIT_S, SENDER_REPORT_WAIT_S
from msightd.media.rtp_depacketizer import SenderReport


@dataclass(frozen=True)
class ClockNote:
    """Something the owner should log about the clock (``warning``: the camera's clock is not used as asked)."""

    warning: bool
    fields: dict[str, Any] = field(default_factory=dict)


class CameraClock:
    """One connection's choice of clock. Not thread-safe: the capture that owns it feeds it."""

    def __init__(self, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        self._in_use: SenderReport | None = None
        self._seen: SenderReport | None = None
        self._step_said: float | None = None  # every later report repeats a step: say each step once
        self._waiting_since: float | None = None  # monotonic: a host clock step must not end or prolong the wait
        self.decided = False
        self._notes: list[ClockNote] = []

    def decide(self, report: SenderReport | None, first_timestamp: int, first_arrival: float) -> bool:
        """With the connection's first frame (RTP ``first_timestamp``, arrived at ``first_arrival`` by this
        host's clock) waiting: True once it is known which clock stamps the frames, False to keep waiting."""
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        if report is not None:
            offset_s = first_arrival - report.time_of(first_timestamp, self._clock_rate)
            low, high = CAMERA_CLOCK_OFFSET_RANGE_S
            if low <= offset_s <= high:
                self._in_use = self._seen = report
                self._note(False, clock="camera", offset_s=round(offset_s, 3))
            else:
                direction = "behind" if offset_s > 0 else "ahead of"
                problem = f"the camera's clock is {abs(offset_s):.1f} s {direction} this host's (set NTP on the camera)"
                self._note(True, clock="arrival", problem=problem)
        elif time.monotonic() - self._waiting_since >= SENDER_REPORT_WAIT_S:
            self._note(
                True, clock="arrival", problem=f"the camera sent no RTCP sender report in {SENDER_REPORT_WAIT_S:g} s"
            )
        else:
            return False
        self.decided = True
        return True

    def time_of(self, timestamp: int, report: SenderReport | None) -> float | None:
        """When the frame of RTP ``timestamp`` was sampled by the camera's clock (None: arrival times for
        this connection), after following ``report``, the camera's newest, if it agrees with the one in use."""
        in_use = self._in_use
        if in_use is None:
            return None
        if report is not None and report is not self._seen:
            self._seen = report
            step_s = report.wall - in_use.time_of(report.timestamp, self._clock_rate)
            if abs(step_s) <= CAMERA_CLOCK_STEP_LIMIT_S:
                self._in_use = in_use = report
                self._step_said = None  # back in agreement: a step that comes again is said again
            elif self._step_said is None or abs(step_s - self._step_said) > CAMERA_CLOCK_STEP_LIMIT_S:
                self._step_said = step_s
                self._note(
                    True, clock="camera", step_s=round(step_s, 3),
                    problem="the camera's clock stepped; capture times stay on the clock this connection started with",
                )  # fmt: skip
        return in_use.time_of(timestamp, self._clock_rate)

    def take_notes(self) -> list[ClockNote]:
        notes, self._notes = self._notes, []
        return notes

    def _note(self, warning: bool, **fields: Any) -> None:
        self._notes.append(ClockNote(warning, fields))
