"""Passthrough capture with msightd's own RTSP client: :class:`~msightd.media.packets.PacketCapture`'s
interface over :class:`~msightd.media.rtsp_session.RtspSession` and the RTP depacketizer.

It hands out the same :class:`~msightd.media.packets.AccessUnit` FFmpeg's demuxer would (Annex B bytes,
keyframe flag, parameter sets and picture size in force), with pts straight from the RTP timestamps
(counted from the session's first packet, in the track's clock: 1/90000 s), so the recorder's rules do not
depend on which reader fed it. Decode timestamps are left to the muxer (derived from the pts), as FFmpeg's
RTSP demuxer leaves them too.

With ``camera_clock`` each access unit also carries the time the camera sampled it, by the camera's clock
(its RTCP sender reports map RTP timestamps to it). The first frames of a connection are held until the
first report (at most :data:`~msightd.media.formats.SENDER_REPORT_WAIT_S`), so that every frame of a
connection has the same clock; a camera that sends no report, or whose clock is more than
:data:`~msightd.media.formats.CAMERA_CLOCK_SKEW_LIMIT_S` from this host's (no NTP), gets arrival times
instead, and :attr:`RtspPacketCapture.clock_decision` says which and why.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

from msightd.media.capture import CaptureSettings
from msightd.media.formats import CAMERA_CLOCK_SKEW_LIMIT_S, SENDER_REPORT_WAIT_S
from msightd.media.packets import AccessUnit, ParameterSets
from msightd.media.rtp_depacketizer import RtpAccessUnit
from msightd.media.rtsp_session import RtspError, RtspSession


@dataclass(frozen=True)
class ClockDecision:
    """Whose clock this connection's frames are stamped with, once known: the camera's (``offset_s``: how
    much later than sampled the first frame reached us) or, when it cannot be trusted, arrival (``problem``)."""

    camera: bool
    offset_s: float = 0.0
    problem: str = ""


class RtspPacketCapture:
    """Access units of one RTSP camera. Not thread-safe: one owner, who must :meth:`close` it.

    :raises RtspError: on open, when the camera cannot be reached or refuses (retry later);
    :raises RtspUnsupported: when it needs what this client does not do (use FFmpeg's instead).
    """

    def __init__(self, settings: CaptureSettings, camera_clock: bool = False) -> None:
        self._session = RtspSession(settings.url, settings.open_timeout_s, settings.read_timeout_s)
        try:
            track = self._session.open()
        except BaseException:
            self._session.close()
            raise
        self.codec = track.codec
        self.time_base = Fraction(1, track.clock_rate)
        self._frame_rate = track.frame_rate
        self._parameters = ParameterSets(track.codec)
        self._parameters.take(track.parameter_sets)
        self._depacketizer = self._session.depacketizer()
        self._ready: deque[RtpAccessUnit] = deque()
        self._clock_rate = track.clock_rate
        self._camera_clock = camera_clock
        self._clock_pending = camera_clock  # frames are held until the clock is decided
        self._first_arrival = 0.0
        #: Set once, with ``camera_clock``, when the first frames are stamped (for the owner's log).
        self.clock_decision: ClockDecision | None = None
        #: Why the camera was lost (for the owner's log line); empty while it sends.
        self.lost_reason = ""

    @property
    def parameters(self) -> ParameterSets:
        return self._parameters

    def damage(self) -> dict[str, int]:
        """What the camera's stream lost or this reader skipped since it opened (non-zero counts only), for
        the owner's log: packets missing from the sequence (their frames are recorded without the broken NAL
        unit), packets of payload modes not supported, bytes that were not RTSP."""
        counts = {
            "rtp_packets_lost": self._depacketizer.lost,
            "rtp_packets_unsupported": self._depacketizer.unsupported,
            "stray_bytes": self._session.skipped_bytes,
        }
        return {name: count for name, count in counts.items() if count}

    def read(self) -> AccessUnit | None:
        """The next access unit; None when the camera stopped, failed or stalled past the read timeout."""
        ready, depacketizer = self._ready, self._depacketizer
        while not ready or (self._clock_pending and not self._decide_clock()):
            try:
                self._session.receive(depacketizer)
            except RtspError as exc:
                self.lost_reason = str(exc)
                return None
            if depacketizer.completed and not self._first_arrival:
                self._first_arrival = time.time()
            ready.extend(depacketizer.completed)
            depacketizer.completed.clear()
        unit = ready.popleft()
        parameters = self._parameters
        parameters.take_in_band(unit.data)
        camera_time = depacketizer.camera_time(unit.timestamp, self._clock_rate) if self._camera_clock else None
        return AccessUnit(
            data=unit.data,
            keyframe=unit.keyframe,
            pts=unit.timestamp,
            dts=None,
            duration=0,
            time_base=self.time_base,
            codec=self.codec,
            extradata=parameters.extradata,
            width=parameters.width,
            height=parameters.height,
            camera_time=camera_time,
        )

    def _decide_clock(self) -> bool:
        """With frames held: whether the camera's clock can stamp them (a sender report came and agrees with
        this host's clock) or arrival must (no report in time, or a clock far off). False: keep waiting."""
        now = time.time()
        first = self._ready[0]
        sampled = self._depacketizer.camera_time(first.timestamp, self._clock_rate)
        if sampled is not None and abs(self._first_arrival - sampled) <= CAMERA_CLOCK_SKEW_LIMIT_S:
            decision = ClockDecision(camera=True, offset_s=self._first_arrival - sampled)
        elif sampled is not None:
            skew = self._first_arrival - sampled
            direction = "behind" if skew > 0 else "ahead of"
            problem = f"the camera's clock is {abs(skew):.1f} s {direction} this host's (set NTP on the camera)"
            decision = ClockDecision(camera=False, problem=problem)
        elif now - self._first_arrival >= SENDER_REPORT_WAIT_S:
            problem = f"the camera sent no RTCP sender report in {SENDER_REPORT_WAIT_S:g} s"
            decision = ClockDecision(camera=False, problem=problem)
        else:
            return False
        self.clock_decision, self._clock_pending = decision, False
        self._camera_clock = decision.camera
        return True

    def frame_rate(self) -> float:
        """The frame rate the camera's SDP states (0 when it states none, as most do)."""
        return self._frame_rate

    def rewind(self) -> None:
        raise OSError("a camera cannot be rewound")

    def close(self) -> None:
        self._session.close()
