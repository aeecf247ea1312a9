"""Passthrough capture with msightd's own RTSP client: :class:`~msightd.media.packets.PacketCapture`'s
interface over :class:`~msightd.media.rtsp_session.RtspSession` and the RTP depacketizer.

It hands out the same :class:`~msightd.media.packets.AccessUnit` FFmpeg's demuxer would (Annex B bytes,
keyframe flag, parameter sets and picture size in force), with pts straight from the RTP timestamps
(counted from the session's first packet, in the track's clock: 1/90000 s), so the recorder's rules do not
depend on which reader fed it. Decode timestamps are left to the muxer (derived from the pts), as FFmpeg's
RTSP demuxer leaves them too.

Each access unit carries the time it was received. With ``camera_clock`` it also carries the time the
camera sampled it, by the camera's clock (:mod:`msightd.media.camera_clock`): the connection's first frames
are held until that is decided.
"""

from __future__ import annotations

import time
from collections import deque
from fractions import Fraction

from msightd.media.camera_clock import CameraClock
from msightd.media.capture import CaptureSettings
from msightd.media.packets import AccessUnit, ParameterSets
from msightd.media.rtp_depacketizer import RtpAccessUnit
from msightd.media.rtsp_session import RtspError, RtspSession


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
        self._ready: deque[tuple[RtpAccessUnit, float]] = deque()  # with the time.time() it was received
        #: With ``camera_clock``: this connection's choice of clock (its notes are for the owner's log).
        self.clock = CameraClock(track.clock_rate) if camera_clock else None
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
        ready, depacketizer, clock = self._ready, self._depacketizer, self.clock
        while not ready or (clock is not None and not clock.decided and not self._clock_decided(clock)):
            try:
                self._session.receive(depacketizer)
            except RtspError as exc:
                self.lost_reason = str(exc)
                return None
            if depacketizer.completed:
                received = time.time()
                ready.extend((completed, received) for completed in depacketizer.completed)
                depacketizer.completed.clear()
        unit, received = ready.popleft()
        parameters = self._parameters
        parameters.take_in_band(unit.data)
        camera_time = None if clock is None else clock.time_of(unit.timestamp, depacketizer.sender_report)
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
            received_at=received,
        )

    def _clock_decided(self, clock: CameraClock) -> bool:
        first, received = self._ready[0]
        return clock.decide(self._depacketizer.sender_report, first.timestamp, received)

    def frame_rate(self) -> float:
        """The frame rate the camera's SDP states (0 when it states none, as most do)."""
        return self._frame_rate

    def rewind(self) -> None:
        raise OSError("a camera cannot be rewound")

    def close(self) -> None:
        self._session.close()
