from __future__ import annotations

from fractions import Fraction
from typing import Any

import msgpack
import pytest

from msightd.messages import (
    IMAGE_DATA_TYPE,
    PACKET_DATA_TYPE,
    FrameMessage,
    MalformedMessage,
    PacketMessage,
    decode_frame,
    decode_frame_or_packet,
    decode_packet,
)


def make_packet(**overrides: Any) -> PacketMessage:
    fields: dict[str, Any] = dict(
        sensor_name="cam",
        capture_timestamp=1769254125.649586,
        creation_timestamp=1769254125.7,
        frame_id=913589778076741632,
        device_name="edge1",
        codec="h264",
        extradata=b"\x00\x00\x00\x01\x67sps\x00\x00\x00\x01\x68pps",
        keyframe=True,
        pts=None,
        dts=None,
        time_base=Fraction(1, 90000),
        width=1280,
        height=960,
        data=b"\x00\x00\x00\x01\x65slice",
        sequence=0,
        duration=9000,
    )
    fields.update(overrides)
    return PacketMessage(**fields)


def wire_with(**changes: Any) -> bytes:
    raw = msgpack.unpackb(make_packet().to_wire(), raw=False)
    raw.update(changes)
    for name in [k for k, v in changes.items() if v is KeyError]:
        del raw[name]
    packed: bytes = msgpack.packb(raw, use_bin_type=True)
    return packed


def test_packet_round_trips_with_its_own_data_type() -> None:
    packet = make_packet(pts=123456, dts=120000)
    raw = msgpack.unpackb(packet.to_wire(), raw=False)
    assert raw["data_type"] == PACKET_DATA_TYPE == "msightd.data.packet.PacketData"
    assert raw["time_base"] == [1, 90000] and raw["keyframe"] is True
    assert decode_packet(packet.to_wire()) == packet
    assert decode_packet(make_packet().to_wire()).pts is None


def test_one_reader_takes_frames_and_packets() -> None:
    frame = FrameMessage("cam", 1.0, 1.0, 5, "edge", b"jpeg", (2, 2, 3))
    assert decode_frame_or_packet(frame.to_wire()) == frame
    assert decode_frame_or_packet(make_packet().to_wire()) == make_packet()


def test_a_packet_is_not_a_frame_for_frame_only_readers() -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_frame(make_packet().to_wire())
    assert caught.value.reason == "wrong_data_type"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"codec": "mpeg2video"}, "bad_field"),
        ({"codec": KeyError}, "missing_field"),
        ({"data": b""}, "bad_field"),
        ({"data": "text"}, "bad_field"),
        ({"keyframe": 1}, "bad_field"),
        ({"pts": 1.5}, "bad_field"),
        ({"time_base": [1, 0]}, "bad_field"),
        ({"time_base": [1]}, "bad_field"),
        ({"width": -1}, "bad_field"),
        ({"sequence": KeyError}, "missing_field"),
        ({"extradata": None}, "missing_field"),
        ({"capture_timestamp": float("inf")}, "bad_field"),
        ({"data_type": IMAGE_DATA_TYPE}, "missing_field"),
        ({"capture_clock": "gps"}, "bad_field"),
        ({"capture_clock": 1}, "bad_field"),
    ],
    ids=str,
)
def test_bad_packets_raise_malformed_with_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_frame_or_packet(wire_with(**changes))
    assert caught.value.reason == reason


def test_the_capture_clock_travels_and_packets_without_one_are_stamped_on_arrival() -> None:
    assert decode_packet(make_packet(capture_clock="camera").to_wire()).capture_clock == "camera"
    assert decode_packet(wire_with(capture_clock=KeyError)).capture_clock == "arrival"  # msightd before 2026-12
