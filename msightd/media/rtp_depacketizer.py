"""RTP over RTSP's interleaved TCP back into H.264 / H.265 access units (RFC 2326 10.12, RFC 3550, RFC 6184,
RFC 7798), as FFmpeg's RTSP demuxer gives them.

A camera cuts each frame into RTP packets: one NAL unit per packet, several small ones aggregated into one
(STAP-A, AP), or one large one fragmented over many (FU-A, FU). This module puts them back: every NAL unit
behind a 4-byte start code (Annex B, byte for byte what FFmpeg's ``rtpdec_h264``/``rtpdec_hevc`` produce), one
access unit per RTP timestamp, closed by the marker bit (or, if a camera omits it, by the next timestamp).
Whether the unit is a keyframe (an IDR, an IRAP picture in H.265, or an H.264 picture after an SEI saying it
is an exact recovery point) is read from the NAL units on the way, so nothing is scanned twice.

Why one loop over the interleaved frames rather than a function per packet: a recorder wakes up two or three
times a frame for a few dozen packets each time, with its caches cold, and then every Python call counts
(measured: splitting the walk into per-packet calls doubled the CPU per frame). The middle fragments of a
large NAL unit, nearly every packet, take the loop's short path; everything else takes a method.

Packets lost in transit (a gap in sequence numbers: over TCP only a broken camera does that) leave a NAL
unit incomplete; the unit being fragmented is dropped rather than recorded as garbage, the rest of the
frame is kept, and :attr:`Depacketizer.lost` counts them. The modes cameras do not use (STAP-B, MTAP, FU-B,
H.265 PACI) are counted in :attr:`Depacketizer.unsupported` and skipped.

RTCP sender reports on the stream's RTCP channel (RFC 3550 6.4.1) are read on the way: each maps an RTP
timestamp to the camera's wall clock (NTP); :attr:`Depacketizer.sender_report` keeps the newest
(:class:`SenderReport`), with which :mod:`msightd.media.camera_clock` gives a frame the time the camera
sampled it rather than the time it reached us.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from msightd.media import nal

_START = nal.START_CODE
_H264_STAP_A, _H264_FU_A, _H264_IDR = 24, 28, nal.H264_IDR
_HEVC_AP, _HEVC_FU = 48, 49
_RTP_HEADER = struct.Struct(">BBHI")  # flags, marker + payload type, sequence number, timestamp
_RTCP_SR = 200
_SENDER_INFO = struct.Struct(">III")  # NTP seconds, NTP fraction, RTP timestamp (after header and SSRC)
_NTP_TO_UNIX_S = 2_208_988_800  # 1900-01-01 to 1970-01-01
_HEVC_IRAP = nal.HEVC_IRAP


def _timestamp_step(earlier: int, later: int) -> int:
    """``later - earlier`` for 32-bit RTP timestamps that wrap (every 13 h at 90 kHz); negative when
    ``later`` is in fact older (a late packet, a report about an earlier frame)."""
    step = (later - earlier) & 0xFFFFFFFF
    return step - (1 << 32) if step >= 0x80000000 else step


@dataclass(frozen=True)
class SenderReport:
    """A camera's statement that RTP ``timestamp`` (unwrapped, on the frames' timeline) was ``wall`` on its
    clock (Unix seconds)."""

    wall: float
    timestamp: int

    def time_of(self, timestamp: int, clock_rate: int) -> float:
        """When, by the camera's clock, the frame of RTP ``timestamp`` was sampled."""
        return self.wall + (timestamp - self.timestamp) / clock_rate


def _ntp_to_unix(seconds: int, fraction: int) -> float:
    """NTP's 32-bit seconds wrap on 2036-02-07; values below 2**31 are taken as after that (RFC 5905's era
    rule), so a camera's clock stays readable then. A camera whose clock was never set reports dates near
    1900 or far ahead: either way far from the host's, which is what the caller checks."""
    if seconds < 0x80000000:
        seconds += 1 << 32
    return seconds - _NTP_TO_UNIX_S + fraction / 2**32


@dataclass(frozen=True)
class RtpAccessUnit:
    """One frame in Annex B form; ``timestamp`` is the RTP timestamp, unwrapped (it keeps increasing past
    2**32) and counted from the first packet of the session."""

    data: bytes
    timestamp: int
    keyframe: bool


class Depacketizer:
    """Access units of one RTP stream of ``codec`` (``h264`` or ``hevc``). Not thread-safe: one owner.

    :meth:`feed` walks interleaved frames in a receive buffer (copying what it keeps); finished access units
    collect in :attr:`completed`, in order, for the caller to take.
    """

    def __init__(self, codec: str, channel: int, payload_type: int, rtcp_channel: int = -1) -> None:
        if codec not in nal.CODECS:
            raise ValueError(f"no RTP depacketizer for {codec!r} (H.264 and H.265 only)")
        self._hevc = codec == nal.HEVC
        self._channel = channel
        self._rtcp_channel = rtcp_channel
        self._payload_type = payload_type
        #: The camera's newest sender report.
        self.sender_report: SenderReport | None = None
        self._early_report: tuple[float, int] | None = None  # (wall, raw RTP timestamp) before any RTP packet
        self.completed: list[RtpAccessUnit] = []
        self._parts: list[bytes | bytearray] = []
        self._keyframe = False
        self._sei = False  # an H.264 SEI in the unit: it may make an I-frame a keyframe (read at its close)
        self._fragmenting = False  # inside a fragmented NAL unit whose first fragment was seen
        self._expected_sequence = -1
        self._last_raw = -1  # the last RTP timestamp as sent
        self._timestamp = 0  # ... unwrapped, counted from the first packet's
        #: Packets missing from the sequence, and packets of payload modes not supported (both skipped).
        self.lost = 0
        self.unsupported = 0

    def feed(self, buffer: bytearray, position: int, end: int) -> int:
        """Take the interleaved frames in ``buffer[position:end]`` (those of other channels, e.g. RTCP, are
        skipped) and return where the first one not taken starts: an incomplete frame, or bytes that are not
        an interleaved frame (an RTSP reply, for the caller)."""
        parts, unpack, channel, payload_type = self._parts, _RTP_HEADER.unpack_from, self._channel, self._payload_type
        fu_type, fu_skip = (_HEVC_FU << 1, 3) if self._hevc else (_H264_FU_A, 2)
        fu_mask = 0x7E if self._hevc else 0x1F
        while end - position >= 4 and buffer[position] == 0x24:  # '$'
            stop = position + 4 + ((buffer[position + 2] << 8) | buffer[position + 3])
            if stop > end:
                break
            frame, position = position, stop
            if buffer[frame + 1] != channel or stop - frame < 16:
                if buffer[frame + 1] == self._rtcp_channel:
                    self._rtcp(buffer, frame + 4, stop)
                continue
            flags, marker_type, sequence, timestamp = unpack(buffer, frame + 4)
            if marker_type & 0x7F != payload_type or flags & 0xC0 != 0x80:
                continue
            payload = frame + 16 + 4 * (flags & 0x0F)
            if flags & 0x10 and payload + 4 <= stop:  # header extension
                payload += 4 + 4 * ((buffer[payload + 2] << 8) | buffer[payload + 3])
            payload_end = stop - buffer[stop - 1] if flags & 0x20 else stop
            if timestamp != self._last_raw or sequence != self._expected_sequence:
                self._discontinuity(timestamp, sequence)
            self._expected_sequence = (sequence + 1) & 0xFFFF
            if payload < payload_end - fu_skip and buffer[payload] & fu_mask == fu_type:
                fu = buffer[payload + fu_skip - 1]
                if fu & 0x80:
                    self._fragment_start(buffer, payload, fu)
                if self._fragmenting:
                    parts.append(buffer[payload + fu_skip : payload_end])
            elif payload < payload_end:
                self._unfragmented(buffer, payload, payload_end)
            if marker_type & 0x80 and parts:
                self._close()
        return position

    def _rtcp(self, buffer: bytearray, at: int, end: int) -> None:
        """Take the sender report of an RTCP compound packet (skipping receiver reports, SDES, BYE...). One
        that comes before the first RTP packet is placed on the frames' timeline when that packet comes."""
        while at + 28 <= end and buffer[at] & 0xC0 == 0x80:
            length = 4 + 4 * ((buffer[at + 2] << 8) | buffer[at + 3])
            if buffer[at + 1] == _RTCP_SR and length >= 28:
                seconds, fraction, raw = _SENDER_INFO.unpack_from(buffer, at + 8)
                wall = _ntp_to_unix(seconds, fraction)
                if self._last_raw < 0:
                    self._early_report = (wall, raw)
                else:
                    self.sender_report = SenderReport(wall, self._timestamp + _timestamp_step(self._last_raw, raw))
                return
            at += length

    def _discontinuity(self, raw: int, sequence: int) -> None:
        """A new timestamp (the next frame: close one whose marker was lost) or a gap in the sequence."""
        if raw != self._last_raw:
            if self._parts:
                self._close()
            if self._last_raw >= 0:  # 32-bit timestamps wrap (every 13 h at 90 kHz); a late packet steps back
                self._timestamp += _timestamp_step(self._last_raw, raw)
            elif self._early_report is not None:
                wall, reported = self._early_report
                self.sender_report = SenderReport(wall, _timestamp_step(raw, reported))
            self._last_raw = raw
        if self._expected_sequence >= 0 and sequence != self._expected_sequence:
            self.lost += (sequence - self._expected_sequence) & 0xFFFF
            if self._fragmenting:  # the unit being fragmented lost a piece: drop it, back to its start code
                self._fragmenting = False
                last_start = len(self._parts) - 1 - self._parts[::-1].index(_START)
                del self._parts[last_start:]

    def _close(self) -> None:
        data = b"".join(self._parts)
        keyframe = self._keyframe or (self._sei and nal.starts_random_access(nal.H264, data))
        self.completed.append(RtpAccessUnit(data, self._timestamp, keyframe))
        self._parts.clear()  # in place: feed() holds it
        self._keyframe = self._sei = False
        self._fragmenting = False

    def _note_kind(self, header: int) -> None:
        if self._hevc:
            self._keyframe |= ((header >> 1) & 0x3F) in _HEVC_IRAP
        elif header & 0x1F == _H264_IDR:
            self._keyframe = True
        elif header & 0x1F == nal.H264_SEI:
            self._sei = True

    def _fragment_start(self, buffer: bytearray, payload: int, fu: int) -> None:
        """The first fragment of a FU-A / FU brings the NAL header back (the rest append to it)."""
        if self._hevc:
            header = bytes(((buffer[payload] & 0x81) | ((fu & 0x3F) << 1), buffer[payload + 1]))
        else:
            header = bytes(((buffer[payload] & 0xE0) | (fu & 0x1F),))
        self._parts.append(_START)
        self._parts.append(header)
        self._fragmenting = True
        self._note_kind(header[0])

    def _unfragmented(self, buffer: bytearray, payload: int, end: int) -> None:
        """A single NAL unit, an aggregate of them (STAP-A, AP: a 16-bit size before each), or a mode skipped."""
        header = buffer[payload]
        kind = (header >> 1) & 0x3F if self._hevc else header & 0x1F
        if kind < (_HEVC_AP if self._hevc else _H264_STAP_A) and (kind or self._hevc):
            self._whole(buffer, payload, end)
            return
        if kind != (_HEVC_AP if self._hevc else _H264_STAP_A):
            self.unsupported += 1
            return
        at = payload + (2 if self._hevc else 1)
        while at + 2 < end:
            size = (buffer[at] << 8) | buffer[at + 1]
            at += 2
            if size == 0 or at + size > end:
                self.unsupported += 1  # a truncated aggregate: keep the units that were whole
                return
            self._whole(buffer, at, at + size)
            at += size

    def _whole(self, buffer: bytearray, start: int, end: int) -> None:
        self._parts.append(_START)
        self._parts.append(buffer[start:end])
        self._fragmenting = False
        self._note_kind(buffer[start])
