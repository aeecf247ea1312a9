"""Frame and segment messages and their MessagePack wire format.

The wire format is MSight's: a MessagePack map tagged with ``data_type`` naming the MSight class
(``msight_core.data.image.ImageData`` / ``msight_core.data.video.VideoData``). MSight readers look the
class up by that tag and read only the fields they know, so the extra fields msightd adds (``fps``,
``codec``, ...) are invisible to them, and msightd ignores fields it does not know in the other direction.
Compressed camera packets (passthrough recording) are msightd's own type, in the same style:
``msightd.data.packet.PacketData``.

Decoding is the edge where untrusted bytes enter a node: every problem becomes a
:class:`MalformedMessage` with a short ``reason`` (a bounded set, used as a metric label) and a sentence
for the log. Nothing in a message is ever executed or unpickled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, cast

import msgpack

from msightd.media.formats import CAPTURE_CLOCKS, CaptureClock

IMAGE_DATA_TYPE = "msight_core.data.image.ImageData"
VIDEO_DATA_TYPE = "msight_core.data.video.VideoData"

#: Largest message a node accepts (bytes). A raw 4K BGR frame is ~25 MB and a 100-frame 1080p H.264
#: segment is a few MB, so 64 MiB leaves room while stopping a runaway producer from exhausting memory.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class MalformedMessage(ValueError):
    """A message that cannot be used. ``reason`` is one of a small fixed set (safe as a metric label)."""

    REASONS = ("oversized", "not_msgpack", "not_a_map", "wrong_data_type", "missing_field", "bad_field")

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FrameRef:
    """Where a frame's pixels wait in shared memory (see :mod:`msightd.media.frame_ring`): the ring's file name
    inside the consumer's own shm directory, the slot, and the frame's sequence number in that ring."""

    ring: str
    slot: int
    seq: int


@dataclass(frozen=True)
class FrameMessage:
    """One camera frame as it travels on a frame topic.

    ``capture_timestamp`` and ``creation_timestamp`` are Unix epoch seconds (float, UTC based).
    ``image`` holds JPEG bytes when ``is_encoded`` is true, else the raw BGR buffer of shape ``size``,
    unless ``shm`` is set: then ``image`` is empty and the pixels (I420) wait in a shared-memory ring on
    this host. Such messages are for msightd consumers on the same host; MSight's readers need JPEG.
    """

    sensor_name: str
    capture_timestamp: float
    creation_timestamp: float
    frame_id: int
    device_name: str
    image: bytes
    size: tuple[int, int, int]
    is_encoded: bool = True
    shm: FrameRef | None = None

    def to_wire(self) -> bytes:
        shm = self.shm
        return _pack(
            {
                "data_type": IMAGE_DATA_TYPE,
                "sensor_name": self.sensor_name,
                "capture_timestamp": self.capture_timestamp,
                "creation_timestamp": self.creation_timestamp,
                "frame_id": self.frame_id,
                "device_name": self.device_name,
                "image": self.image,
                "is_encoded": self.is_encoded,
                "detection_results": None,
                "size": list(self.size),
                **({} if shm is None else {"shm_ring": shm.ring, "shm_slot": shm.slot, "shm_seq": shm.seq}),
            }
        )


@dataclass(frozen=True)
class SegmentMessage:
    """One encoded video segment (a whole MP4 file) and the frames it holds, in order.

    ``frame_id`` and ``capture_timestamp`` are those of the first frame, so the same frames always give
    the same segment identity (a redelivered segment maps to the same file name).
    """

    sensor_name: str
    capture_timestamp: float
    creation_timestamp: float
    frame_id: int
    device_name: str
    video: bytes
    frame_ids: tuple[int, ...]
    capture_timestamps: tuple[float, ...]
    fps: float
    codec: str
    width: int
    height: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        return len(self.frame_ids)

    def to_wire(self) -> bytes:
        return _pack(
            {
                "data_type": VIDEO_DATA_TYPE,
                "sensor_name": self.sensor_name,
                "capture_timestamp": self.capture_timestamp,
                "creation_timestamp": self.creation_timestamp,
                "frame_id": self.frame_id,
                "device_name": self.device_name,
                "video": self.video,
                "detection_results": None,
                "frame_ids": list(self.frame_ids),
                "capture_timestamps": list(self.capture_timestamps),
                "fps": self.fps,
                "codec": self.codec,
                "width": self.width,
                "height": self.height,
                "frame_count": self.frame_count,
                **dict(self.extra),
            }
        )


def _pack(fields: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def _unpack_map(payload: bytes, expected_type: str | tuple[str, ...]) -> dict[str, Any]:
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MalformedMessage("oversized", f"{len(payload)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage input
        raise MalformedMessage("not_msgpack", f"cannot unpack MessagePack ({type(exc).__name__})") from exc
    if not isinstance(fields, dict):
        raise MalformedMessage("not_a_map", f"expected a map, got {type(fields).__name__}")
    data_type = fields.get("data_type")
    if data_type not in _as_tuple(expected_type):
        raise MalformedMessage("wrong_data_type", f"data_type is {data_type!r}, expected {expected_type!r}")
    return fields


def _field(fields: Mapping[str, Any], name: str, kinds: type | tuple[type, ...]) -> Any:
    if name not in fields or fields[name] is None:
        raise MalformedMessage("missing_field", f"field {name!r} is missing")
    value = fields[name]
    # bool is an int subclass: a True frame_id is nonsense, so reject it explicitly.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        raise MalformedMessage("bad_field", f"field {name!r} has type {type(value).__name__}")
    return value


def _as_tuple(kinds: Any) -> tuple[Any, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _timestamp(fields: Mapping[str, Any], name: str) -> float:
    value = float(_field(fields, name, (int, float)))
    if not math.isfinite(value) or value < 0:
        raise MalformedMessage("bad_field", f"field {name!r} is not a valid epoch time: {value}")
    return value


def _identity(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every MSight message carries: whose, when, which."""
    device = fields.get("device_name")
    return {
        "sensor_name": _sensor_name(fields),
        "capture_timestamp": _timestamp(fields, "capture_timestamp"),
        "creation_timestamp": float(fields.get("creation_timestamp") or 0.0),
        "frame_id": int(_field(fields, "frame_id", int)),
        "device_name": device if isinstance(device, str) else "",
    }


def _sensor_name(fields: Mapping[str, Any]) -> str:
    return str(_field(fields, "sensor_name", str))


def decode_frame(payload: bytes) -> FrameMessage:
    """Parse a frame topic message; raise :class:`MalformedMessage` when it is unusable."""
    return _frame_from_fields(_unpack_map(payload, IMAGE_DATA_TYPE))


def _frame_from_fields(fields: Mapping[str, Any]) -> FrameMessage:
    image = bytes(_field(fields, "image", (bytes, bytearray)))
    raw_size = _field(fields, "size", (list, tuple))
    if len(raw_size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw_size):
        raise MalformedMessage("bad_field", f"field 'size' must be [height, width, channels], got {raw_size!r}")
    size = (int(raw_size[0]), int(raw_size[1]), int(raw_size[2]))
    is_encoded = bool(fields.get("is_encoded", True))
    shm = _frame_ref(fields) if "shm_ring" in fields else None
    if shm is None and not is_encoded and len(image) != size[0] * size[1] * size[2]:
        raise MalformedMessage("bad_field", f"raw image holds {len(image)} bytes, size {list(size)} needs more")
    return FrameMessage(
        **_identity(fields),
        image=image,
        size=size,
        is_encoded=is_encoded,
        shm=shm,
    )


def _frame_ref(fields: Mapping[str, Any]) -> FrameRef:
    ring = str(_field(fields, "shm_ring", str))
    slot = int(_field(fields, "shm_slot", int))
    seq = int(_field(fields, "shm_seq", int))
    if slot < 0 or seq < 1:
        raise MalformedMessage("bad_field", f"shared-memory reference slot {slot} / seq {seq} is invalid")
    return FrameRef(ring, slot, seq)


_SEGMENT_KNOWN_FIELDS = frozenset(
    (
        "data_type", "sensor_name", "capture_timestamp", "creation_timestamp", "frame_id", "device_name", "video",
        "detection_results", "frame_ids", "capture_timestamps", "fps", "codec", "width", "height", "frame_count",
    )
)  # fmt: skip


def decode_segment(payload: bytes) -> SegmentMessage:
    """Parse a segment topic message; raise :class:`MalformedMessage` when it is unusable."""
    return _segment_from_fields(_unpack_map(payload, VIDEO_DATA_TYPE))


def _segment_from_fields(fields: Mapping[str, Any]) -> SegmentMessage:
    frame_ids = _field(fields, "frame_ids", (list, tuple))
    timestamps = _field(fields, "capture_timestamps", (list, tuple))
    if len(frame_ids) != len(timestamps) or not frame_ids:
        raise MalformedMessage(
            "bad_field", f"frame_ids ({len(frame_ids)}) and capture_timestamps ({len(timestamps)}) differ or are empty"
        )
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in frame_ids):
        raise MalformedMessage("bad_field", "frame_ids must all be integers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in timestamps):
        raise MalformedMessage("bad_field", "capture_timestamps must all be numbers")
    codec = fields.get("codec")
    return SegmentMessage(
        **_identity(fields),
        video=bytes(_field(fields, "video", (bytes, bytearray))),
        frame_ids=tuple(int(v) for v in frame_ids),
        capture_timestamps=tuple(float(v) for v in timestamps),
        fps=float(fields.get("fps") or 0.0),
        codec=codec if isinstance(codec, str) else "unknown",
        width=int(fields.get("width") or 0),
        height=int(fields.get("height") or 0),
        extra={k: v for k, v in fields.items() if k not in _SEGMENT_KNOWN_FIELDS},
    )


# -- compressed camera packets (passthrough recording) ---------------------------------------------

PACKET_DATA_TYPE = "msightd.data.packet.PacketData"
#: Codecs a packet message may carry (FFmpeg's names).
PACKET_CODECS = ("h264", "hevc")


@dataclass(frozen=True)
class PacketMessage:
    """One compressed camera frame (an H.264/H.265 access unit, Annex B) as it travels on a frame topic
    when the camera node records without decoding (``frame_encoding = "packets"``).

    An msightd type (MSight has none): MSight readers skip its ``data_type``. ``pts``/``dts`` are in
    ``time_base`` units (a (num, den) pair) and may be None; ``extradata`` is the Annex B parameter sets
    in force; ``width``/``height`` are the picture size they declare. ``sequence`` counts packets since
    the camera connection opened (0 first): a reset or a gap means packets are missing just before this one.
    """

    sensor_name: str
    capture_timestamp: float
    creation_timestamp: float
    frame_id: int
    device_name: str
    codec: str
    extradata: bytes
    keyframe: bool
    pts: int | None
    dts: int | None
    time_base: Fraction
    width: int
    height: int
    data: bytes
    sequence: int
    duration: int = 0
    #: Whose clock ``capture_timestamp`` is (:data:`msightd.media.formats.CaptureClock`).
    capture_clock: CaptureClock = "arrival"

    def to_wire(self) -> bytes:
        return _pack(
            {
                "data_type": PACKET_DATA_TYPE,
                "sensor_name": self.sensor_name,
                "capture_timestamp": self.capture_timestamp,
                "creation_timestamp": self.creation_timestamp,
                "frame_id": self.frame_id,
                "device_name": self.device_name,
                "codec": self.codec,
                "extradata": self.extradata,
                "keyframe": self.keyframe,
                "pts": self.pts,
                "dts": self.dts,
                "duration": self.duration,
                "time_base": [self.time_base.numerator, self.time_base.denominator],
                "width": self.width,
                "height": self.height,
                "sequence": self.sequence,
                "capture_clock": self.capture_clock,
                "data": self.data,
            }
        )


def decode_packet(payload: bytes) -> PacketMessage:
    """Parse a packet message; raise :class:`MalformedMessage` when it is unusable."""
    return _packet_from_fields(_unpack_map(payload, PACKET_DATA_TYPE))


def decode_frame_or_packet(payload: bytes) -> FrameMessage | PacketMessage:
    """Parse a frame topic message that may hold a decoded frame or a compressed packet (unpacked once)."""
    fields = _unpack_map(payload, (IMAGE_DATA_TYPE, PACKET_DATA_TYPE))
    if fields["data_type"] == PACKET_DATA_TYPE:
        return _packet_from_fields(fields)
    return _frame_from_fields(fields)


def _packet_from_fields(fields: Mapping[str, Any]) -> PacketMessage:
    codec = _field(fields, "codec", str)
    if codec not in PACKET_CODECS:
        raise MalformedMessage("bad_field", f"codec {codec!r} is not one of {', '.join(PACKET_CODECS)}")
    data = bytes(_field(fields, "data", (bytes, bytearray)))
    if not data:
        raise MalformedMessage("bad_field", "field 'data' is empty")
    return PacketMessage(
        **_identity(fields),
        codec=codec,
        extradata=bytes(_field(fields, "extradata", (bytes, bytearray))),
        keyframe=bool(_field(fields, "keyframe", bool)),
        pts=_optional_int(fields, "pts"),
        dts=_optional_int(fields, "dts"),
        time_base=_time_base(fields),
        width=_non_negative_int(fields, "width"),
        height=_non_negative_int(fields, "height"),
        data=data,
        sequence=_non_negative_int(fields, "sequence"),
        duration=_non_negative_int(fields, "duration") if fields.get("duration") is not None else 0,
        capture_clock=_capture_clock(fields),
    )


def _capture_clock(fields: Mapping[str, Any]) -> CaptureClock:
    """Absent in packets of msightd before 2026-12 (arrival, the only clock then)."""
    if fields.get("capture_clock") is None:
        return "arrival"
    clock = _field(fields, "capture_clock", str)
    if clock not in CAPTURE_CLOCKS:
        raise MalformedMessage("bad_field", f"capture_clock {clock!r} is not one of {', '.join(CAPTURE_CLOCKS)}")
    return cast(CaptureClock, clock)


def _optional_int(fields: Mapping[str, Any], name: str) -> int | None:
    return None if fields.get(name) is None else int(_field(fields, name, int))


def _non_negative_int(fields: Mapping[str, Any], name: str) -> int:
    value = int(_field(fields, name, int))
    if value < 0:
        raise MalformedMessage("bad_field", f"field {name!r} is negative: {value}")
    return value


def _time_base(fields: Mapping[str, Any]) -> Fraction:
    pair = _field(fields, "time_base", (list, tuple))
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise MalformedMessage("bad_field", f"field 'time_base' must be [numerator, denominator] > 0, got {pair!r}")
    return Fraction(pair[0], pair[1])


# -- segments a camera node stored itself (passthrough recording in the camera node) ----------------

STORED_DATA_TYPE = "msightd.data.segment.SegmentStored"


@dataclass(frozen=True)
class SegmentStoredMessage:
    """A segment a camera node wrote itself into a dumper's save directory (``record_dir``): the dumper that
    owns the directory catalogues it (retention and uploads follow from the catalog). An msightd type;
    ``file`` is the JSON's bare name, checked by the reader like anything else from a message.
    ``capture_timestamp`` and ``frame_id`` are the first frame's, as for a segment."""

    sensor_name: str
    capture_timestamp: float
    creation_timestamp: float
    frame_id: int
    device_name: str
    file: str
    frame_count: int
    last_capture_timestamp: float
    size_bytes: int

    def to_wire(self) -> bytes:
        return _pack(
            {
                "data_type": STORED_DATA_TYPE,
                "sensor_name": self.sensor_name,
                "capture_timestamp": self.capture_timestamp,
                "creation_timestamp": self.creation_timestamp,
                "frame_id": self.frame_id,
                "device_name": self.device_name,
                "file": self.file,
                "frame_count": self.frame_count,
                "last_capture_timestamp": self.last_capture_timestamp,
                "size_bytes": self.size_bytes,
            }
        )


def decode_segment_or_stored(payload: bytes) -> SegmentMessage | SegmentStoredMessage:
    """Parse a segment topic message: a whole segment, or the notice of one a camera node stored itself."""
    fields = _unpack_map(payload, (VIDEO_DATA_TYPE, STORED_DATA_TYPE))
    if fields["data_type"] == VIDEO_DATA_TYPE:
        return _segment_from_fields(fields)
    return SegmentStoredMessage(
        **_identity(fields),
        file=str(_field(fields, "file", str)),
        frame_count=_non_negative_int(fields, "frame_count"),
        last_capture_timestamp=_timestamp(fields, "last_capture_timestamp"),
        size_bytes=_non_negative_int(fields, "size_bytes"),
    )
