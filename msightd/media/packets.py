"""Reading a camera's compressed access units without decoding them (passthrough recording).

:class:`PacketCapture` opens an RTSP URL or a video file with PyAV's demuxer only and hands out one
:class:`AccessUnit` per frame: the camera's H.264/H.265 bytes in Annex B form (start codes, as RTSP
delivers them; MP4 files are converted by FFmpeg's ``*_mp4toannexb`` filter, which only reframes),
with keyframe flag, pts/dts in the stream's time base, and the parameter sets (VPS/SPS/PPS) and picture
size in force. Parameter sets are tracked from the stream's extradata (the SDP's sprop-parameter-sets)
and then from every in-band copy, so a camera that switches resolution mid-stream is noticed on the
first keyframe of the new size, without decoding: the size is read from the SPS (:mod:`msightd.media.nal`).

Opening and reading use the same timeouts and fast probe as the decoding capture
(:mod:`msightd.media.capture`), so a stalled camera is noticed within seconds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.bitstream import BitStreamFilterContext

from msightd.logs import redact_url
from msightd.media import nal
from msightd.media.capture import CaptureSettings, DecodedFrame, open_input
from msightd.messages import PacketMessage

_MP4_TO_ANNEXB = {nal.H264: "h264_mp4toannexb", nal.HEVC: "hevc_mp4toannexb"}


@dataclass(frozen=True)
class AccessUnit:
    """One compressed frame as the camera sent it, and what a muxer needs to store it as it is.

    ``pts``/``dts`` are in ``time_base`` units and may be None (RTSP gives no timestamp to the first
    packet or two); ``duration`` is 0 when unknown. ``extradata`` is the Annex B parameter sets in force
    for this frame (empty until the stream has shown any). ``width``/``height`` come from the SPS.
    ``camera_time`` is when the camera sampled the frame by its own clock (Unix seconds), where the reader
    knows it (``capture_clock = "camera"``); otherwise the frame is stamped when it arrived: ``received_at``
    where the reader knows it (frames it held back keep their own times), else when the node read it.
    """

    data: bytes
    keyframe: bool
    pts: int | None
    dts: int | None
    duration: int
    time_base: Fraction
    codec: str
    extradata: bytes
    width: int
    height: int
    camera_time: float | None = None
    received_at: float | None = None

    def to_message(
        self, sensor_name: str, device_name: str, frame_id: int, read_at: float, sequence: int
    ) -> PacketMessage:
        """The wire message carrying this access unit (``sequence``: packets since the camera connected),
        stamped with the camera's time when known, else when it arrived (``read_at``: when the node read it)."""
        camera_time = self.camera_time
        arrived_at = read_at if self.received_at is None else self.received_at
        return PacketMessage(
            sensor_name=sensor_name,
            capture_timestamp=arrived_at if camera_time is None else camera_time,
            capture_clock="arrival" if camera_time is None else "camera",
            creation_timestamp=time.time(),
            frame_id=frame_id,
            device_name=device_name,
            codec=self.codec,
            extradata=self.extradata,
            keyframe=self.keyframe,
            pts=self.pts,
            dts=self.dts,
            time_base=self.time_base,
            width=self.width,
            height=self.height,
            data=self.data,
            sequence=sequence,
            duration=self.duration,
        )


def keyframe_picture(unit: AccessUnit) -> DecodedFrame | None:
    """Decode one keyframe on its own (e.g. for a thumbnail of a camera recorded without decoding):
    ~10-20 ms at 1280x960, so call it every few seconds, not per frame. None if it does not decode."""
    decoder: Any = av.CodecContext.create(unit.codec, "r")
    if unit.extradata:
        decoder.extradata = unit.extradata
    try:
        frames = [*decoder.decode(av.Packet(unit.data)), *decoder.decode(None)]
    except av.FFmpegError:
        return None
    return DecodedFrame(video_frame=frames[0]) if frames else None


class ParameterSets:
    """The parameter sets in force, updated from every access unit that carries some.

    Keyed by NAL type (one VPS, SPS and PPS at a time: what cameras send); a new value replaces the old,
    and the picture size is re-read whenever the SPS changes. A parameter set that cannot be read is
    counted in :attr:`unreadable` (with the reason in :attr:`last_error`, for the owner to report); the
    frame still goes through as sent and the last good size stays. Not thread-safe: one owner.
    """

    def __init__(self, codec: str, width: int = 0, height: int = 0) -> None:
        self.codec = codec
        self.width, self.height = width, height
        self._by_type: dict[int, bytes] = {}
        self.extradata = b""
        self.unreadable = 0
        self.last_error = ""

    def take(self, nals: Iterable[bytes]) -> None:
        """Take in-band (or out-of-band) parameter sets."""
        changed = False
        for unit in nals:
            kind = nal.nal_type(self.codec, unit)
            if self._by_type.get(kind) == unit:
                continue
            if nal.is_sps(self.codec, kind):
                try:
                    self.width, self.height = nal.sps_picture_size(self.codec, unit)
                except nal.BitstreamError as exc:
                    self.unreadable += 1
                    self.last_error = str(exc)
                    continue
            self._by_type[kind] = unit
            changed = True
        if changed:
            self.extradata = nal.join_annexb([self._by_type[kind] for kind in sorted(self._by_type)])

    def take_in_band(self, access_unit: bytes) -> None:
        """Take the parameter sets in front of ``access_unit``'s first slice, if any."""
        found = nal.parameter_sets(self.codec, access_unit)
        if found:
            self.take(found)


class PacketCapture:
    """Access units of one source, demuxed only. Not thread-safe: one owner, who must :meth:`close` it.

    :raises OSError: on open, when the source cannot be opened or is not H.264/H.265.
    """

    def __init__(self, settings: CaptureSettings) -> None:
        self._container, self._stream = open_input(settings)
        context = self._stream.codec_context
        codec = str(context.name)
        if codec not in nal.CODECS:
            self.close()
            raise OSError(
                f"{redact_url(settings.url)} is {codec}, not H.264/H.265: passthrough recording needs one of those"
            )
        self.codec = codec
        self.time_base: Fraction = self._stream.time_base or Fraction(1, 90000)
        self._parameters = ParameterSets(codec, int(context.width or 0), int(context.height or 0))
        extradata = bytes(context.extradata or b"")
        self._filter: BitStreamFilterContext | None = None
        if extradata[:1] == b"\x01":  # avcC / hvcC (MP4, MKV): packets are length-prefixed
            self._filter = BitStreamFilterContext(_MP4_TO_ANNEXB[codec], self._stream)
        elif extradata:
            self._parameters.take(nal.parameter_sets(codec, extradata))
        self._packets: Iterator[Any] = self._container.demux(self._stream)
        self._pending: deque[Any] = deque()
        rate = self.frame_rate()
        self._nominal_duration = round(1 / (rate * self.time_base)) if rate else 1
        self._pts_offset = 0  # added on each loop of a file, so timestamps keep increasing
        self._loop_end = 0  # pts just after the last frame seen (this loop, without offset)
        self.last_packet: Any = None  # the av.Packet behind the last access unit (what TeeCapture decodes)

    def read(self) -> AccessUnit | None:
        """The next access unit; None when the source ended, failed or stalled past the read timeout."""
        packet = self._next_packet()
        if packet is None:
            return None
        self.last_packet = packet
        data = bytes(packet)
        self._parameters.take_in_band(data)
        # FFmpeg's flag, less the H.264 recovery points it also flags (only true keyframes start segments)
        keyframe = bool(packet.is_keyframe) and nal.starts_random_access(self.codec, data)
        pts, dts, duration = packet.pts, packet.dts, int(packet.duration or 0)
        if pts is not None:
            self._loop_end = max(self._loop_end, pts + (duration or self._nominal_duration))
        parameters = self._parameters
        return AccessUnit(
            data=data,
            keyframe=keyframe,
            pts=None if pts is None else pts + self._pts_offset,
            dts=None if dts is None else dts + self._pts_offset,
            duration=duration,
            time_base=self.time_base,
            codec=self.codec,
            extradata=parameters.extradata,
            width=parameters.width,
            height=parameters.height,
        )

    def _next_packet(self) -> Any:
        while not self._pending:
            try:
                packet = next(self._packets)
            except (StopIteration, EOFError, OSError, av.FFmpegError):
                return None
            if packet.size == 0:  # the demuxer's end-of-stream marker
                return None
            self._pending.extend(self._filter.filter(packet) if self._filter is not None else (packet,))
        return self._pending.popleft()

    @property
    def parameters(self) -> ParameterSets:
        return self._parameters

    def frame_rate(self) -> float:
        """The source's nominal frame rate (0 when unknown)."""
        rate: Fraction | None = self._stream.average_rate or self._stream.base_rate
        return float(rate) if rate else 0.0

    def rewind(self) -> None:
        """Back to the first frame (files only); timestamps go on increasing from where they were."""
        self._container.seek(0, stream=self._stream)
        self._pts_offset += self._loop_end
        self._loop_end = 0
        self._pending.clear()
        self._packets = self._container.demux(self._stream)

    def close(self) -> None:
        self._container.close()


@dataclass(frozen=True)
class TeedUnit:
    """An access unit and the pictures decoding it produced (none or several: decoders delay B-frames)."""

    unit: AccessUnit
    pictures: list[DecodedFrame]


class TeeCapture:
    """One camera connection for recording and perception: each access unit is handed out as it is and
    also decoded (PyAV), so packets and pictures come from the same demuxed bytes. Not thread-safe.

    The decoder is made from the codec name and the Annex B parameter sets (not the container's
    extradata, which for MP4 files is avcC while the packets are Annex B by then), and made anew when the
    parameter sets change. A packet the decoder refuses (e.g. before the first keyframe) gives no picture
    and is counted in :attr:`undecodable`.
    """

    def __init__(self, settings: CaptureSettings) -> None:
        self._packets = PacketCapture(settings)
        self._threads = settings.decode_threads
        self._decoder: Any = None
        self._decoder_extradata = b""
        self.undecodable = 0

    def read(self) -> TeedUnit | None:
        unit = self._packets.read()
        if unit is None:
            return None
        if self._decoder is None or unit.extradata != self._decoder_extradata:
            self._decoder = self._new_decoder(unit)
        try:
            frames = self._decoder.decode(self._packets.last_packet)
        except av.FFmpegError:
            self.undecodable += 1
            frames = []
        return TeedUnit(unit, [DecodedFrame(video_frame=frame) for frame in frames])

    def _new_decoder(self, unit: AccessUnit) -> Any:
        decoder: Any = av.CodecContext.create(unit.codec, "r")
        if unit.extradata:
            decoder.extradata = unit.extradata
        if self._threads != 1:
            decoder.thread_type = "AUTO"
        decoder.thread_count = self._threads
        self._decoder_extradata = unit.extradata
        return decoder

    @property
    def parameters(self) -> ParameterSets:
        return self._packets.parameters

    def frame_rate(self) -> float:
        return self._packets.frame_rate()

    def rewind(self) -> None:
        self._packets.rewind()

    def close(self) -> None:
        self._decoder = None
        self._packets.close()
