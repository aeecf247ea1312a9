"""Whose clock stamps a connection's frames (capture_clock = "camera"): the decision on the first frame, the
wait for a sender report (on the monotonic clock), and later reports that step the camera's clock."""

from __future__ import annotations

import pytest

from msightd.media import camera_clock
from msightd.media.camera_clock import CameraClock
from msightd.media.formats import SENDER_REPORT_WAIT_S
from msightd.media.rtp_depacketizer import SenderReport

RATE = 90000
NOW = 1_796_000_000.0


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(camera_clock.time, "monotonic", fake)
    return fake


def test_a_camera_on_ntp_stamps_frames_with_its_own_time() -> None:
    clock = CameraClock(RATE)
    report = SenderReport(NOW - 0.2, 9000)  # RTP 9000 sampled 0.2 s before the first frame (RTP 0) arrived
    assert clock.decide(report, 0, NOW)
    assert clock.time_of(0, report) == pytest.approx(NOW - 0.3)
    assert clock.time_of(9000, report) == pytest.approx(NOW - 0.2)
    assert [(note.warning, note.fields) for note in clock.take_notes()] == [
        (False, {"clock": "camera", "offset_s": 0.3})
    ]
    assert clock.take_notes() == [], "said once"


@pytest.mark.parametrize(
    ("wall", "said"),
    [(NOW - 4_005_210_785.9, "4005210785.9 s behind"), (NOW + 2.0, "2.0 s ahead of")],
    ids=["never-set", "ahead"],
)
def test_a_camera_clock_far_from_the_hosts_is_not_used(wall: float, said: str) -> None:
    clock = CameraClock(RATE)
    assert clock.decide(SenderReport(wall, 0), 0, NOW)
    assert clock.time_of(0, SenderReport(wall, 0)) is None, "arrival times"
    (note,) = clock.take_notes()
    assert note.warning and note.fields["clock"] == "arrival"
    assert said in note.fields["problem"] and "set NTP on the camera" in note.fields["problem"]


def test_without_a_report_the_wait_ends_on_the_monotonic_clock(monotonic: FakeMonotonic) -> None:
    clock = CameraClock(RATE)
    assert not clock.decide(None, 0, NOW)
    monotonic.now += SENDER_REPORT_WAIT_S - 0.1
    assert not clock.decide(None, 0, NOW - 3600)  # the host's wall clock stepped back: still waiting
    monotonic.now += 0.1
    assert clock.decide(None, 0, NOW)
    assert clock.time_of(0, None) is None
    (note,) = clock.take_notes()
    assert note.warning and "no RTCP sender report" in note.fields["problem"]


def test_later_reports_are_followed_unless_they_step_the_clock() -> None:
    clock = CameraClock(RATE)
    first = SenderReport(NOW, 0)
    assert clock.decide(first, 0, NOW + 0.1)
    clock.take_notes()
    drifted = SenderReport(NOW + 5.0004, 5 * RATE)  # 5 s later, the camera's clock 0.4 ms ahead of its RTP clock
    assert clock.time_of(5 * RATE, drifted) == pytest.approx(NOW + 5.0004)
    assert clock.take_notes() == []
    stepped = SenderReport(NOW + 3610, 10 * RATE)  # NTP stepped the camera's clock by an hour
    assert clock.time_of(10 * RATE, stepped) == pytest.approx(NOW + 10.0004), "stays on the clock in use"
    (note,) = clock.take_notes()
    assert note.warning and note.fields["step_s"] == pytest.approx(3600, abs=0.01)
    assert clock.time_of(11 * RATE, stepped) == pytest.approx(NOW + 11.0004)
    assert clock.take_notes() == [], "one note per report"
    repeated = SenderReport(NOW + 3615, 15 * RATE)  # the next report repeats the step: not said again
    assert clock.time_of(15 * RATE, repeated) == pytest.approx(NOW + 15.0004)
    assert clock.take_notes() == []
    clock.time_of(20 * RATE, SenderReport(NOW - 3580, 20 * RATE))  # a new step (back by an hour): said
    assert [note.fields["step_s"] for note in clock.take_notes()] == [pytest.approx(-3600, abs=0.01)]
    clock.time_of(25 * RATE, SenderReport(NOW + 25.0004, 25 * RATE))  # back in agreement: followed, nothing said
    assert clock.take_notes() == []
    clock.time_of(30 * RATE, SenderReport(NOW + 3630, 30 * RATE))  # the first step again: said again
    assert [note.fields["step_s"] for note in clock.take_notes()] == [pytest.approx(3600, abs=0.01)]
