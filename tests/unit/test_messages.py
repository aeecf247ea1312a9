from __future__ import annotations

import msgpack
import pytest

from msightd.messages import (
    IMAGE_DATA_TYPE,
    MAX_MESSAGE_BYTES,
    VIDEO_DATA_TYPE,
    FrameMessage,
    FrameRef,
    MalformedMessage,
    SegmentMessage,
    SegmentStoredMessage,
    decode_frame,
    decode_segment,
    decode_segment_or_stored,
)


def make_frame(**overrides: object) -> FrameMessage:
    fields: dict[str, object] = dict(
        sensor_name="cam",
        capture_timestamp=1769254125.649586,
        creation_timestamp=1769254125.7,
        frame_id=913589778076741632,
        device_name="edge1",
        image=b"\xff\xd8jpeg",
        size=(546, 1280, 3),
    )
    fields.update(overrides)
    return FrameMessage(**fields)  # type: ignore[arg-type]


def make_segment() -> SegmentMessage:
    return SegmentMessage(
        sensor_name="cam",
        capture_timestamp=10.5,
        creation_timestamp=11.0,
        frame_id=7,
        device_name="edge1",
        video=b"mp4",
        frame_ids=(7, 8, 9),
        capture_timestamps=(10.5, 10.6, 10.7),
        fps=10.0,
        codec="h264",
        width=640,
        height=480,
    )


def test_frame_round_trips_with_msight_field_names() -> None:
    frame = make_frame()
    wire = frame.to_wire()
    raw = msgpack.unpackb(wire, raw=False)
    assert raw["data_type"] == IMAGE_DATA_TYPE
    assert raw["is_encoded"] is True and raw["detection_results"] is None and raw["size"] == [546, 1280, 3]
    assert decode_frame(wire) == frame


def test_shared_memory_frame_round_trips_without_pixels() -> None:
    ring = "frames.cam-1280x960x160.ring"
    frame = make_frame(image=b"", is_encoded=False, shm=FrameRef(ring, 3, 42))
    wire = frame.to_wire()
    raw = msgpack.unpackb(wire, raw=False)
    assert (raw["shm_ring"], raw["shm_slot"], raw["shm_seq"], raw["image"]) == (ring, 3, 42, b"")
    assert decode_frame(wire) == frame


def test_segment_round_trips_and_keeps_unknown_fields() -> None:
    segment = make_segment()
    raw = msgpack.unpackb(segment.to_wire(), raw=False)
    assert raw["data_type"] == VIDEO_DATA_TYPE and raw["frame_ids"] == [7, 8, 9] and raw["frame_count"] == 3
    raw["future_field"] = "kept"
    decoded = decode_segment(msgpack.packb(raw, use_bin_type=True))
    assert decoded.frame_ids == segment.frame_ids and decoded.video == b"mp4"
    assert decoded.extra == {"future_field": "kept"}


def test_msight_style_frame_without_extra_fields_is_read() -> None:
    """An MSight producer sends no msightd-only fields; only the MSight ones are required."""
    payload = msgpack.packb(
        {
            "data_type": IMAGE_DATA_TYPE,
            "sensor_name": "cam",
            "capture_timestamp": 5,
            "frame_id": 1,
            "image": b"x",
            "size": [2, 2, 3],
            "is_encoded": True,
        },
        use_bin_type=True,
    )
    frame = decode_frame(payload)
    assert frame.capture_timestamp == 5.0 and frame.device_name == "" and frame.creation_timestamp == 0.0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1garbage", "not_msgpack"),
        (b"", "not_msgpack"),
        (msgpack.packb([1, 2, 3]), "not_a_map"),
        (msgpack.packb({"data_type": VIDEO_DATA_TYPE}), "wrong_data_type"),
        (msgpack.packb({"data_type": IMAGE_DATA_TYPE, "sensor_name": "c"}), "missing_field"),
        (make_frame().to_wire()[:-5], "not_msgpack"),
        (msgpack.packb({**msgpack.unpackb(make_frame().to_wire()), "frame_id": "x"}), "bad_field"),
        (msgpack.packb({**msgpack.unpackb(make_frame().to_wire()), "frame_id": True}), "bad_field"),
        (msgpack.packb({**msgpack.unpackb(make_frame().to_wire()), "size": [1, 2]}), "bad_field"),
        (msgpack.packb({**msgpack.unpackb(make_frame().to_wire()), "capture_timestamp": float("nan")}), "bad_field"),
        (make_frame(is_encoded=False, image=b"short").to_wire(), "bad_field"),
        (make_frame(is_encoded=False, image=b"", shm=FrameRef("r.ring", -1, 1)).to_wire(), "bad_field"),
        (make_frame(is_encoded=False, image=b"", shm=FrameRef("r.ring", 0, 0)).to_wire(), "bad_field"),
        (msgpack.packb({**msgpack.unpackb(make_frame().to_wire()), "shm_ring": "r.ring"}), "missing_field"),
    ],
)
def test_bad_frames_raise_malformed_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_frame(payload)
    assert caught.value.reason == reason


def test_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_segment(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    assert caught.value.reason == "oversized"


def test_segment_with_mismatched_lists_is_malformed() -> None:
    raw = msgpack.unpackb(make_segment().to_wire(), raw=False)
    raw["capture_timestamps"] = [1.0]
    with pytest.raises(MalformedMessage) as caught:
        decode_segment(msgpack.packb(raw, use_bin_type=True))
    assert caught.value.reason == "bad_field"


def test_segment_topic_carries_segments_or_notices_of_stored_ones() -> None:
    notice = SegmentStoredMessage(
        sensor_name="cam", capture_timestamp=1769254125.649586, creation_timestamp=1769254136.0,
        frame_id=913589778076741632, device_name="edge1", file="cam_20260124_112845_649586.json",
        frame_count=100, last_capture_timestamp=1769254135.55, size_bytes=4_900_000,
    )  # fmt: skip
    assert decode_segment_or_stored(notice.to_wire()) == notice
    segment = make_segment()
    assert decode_segment_or_stored(segment.to_wire()) == segment
    for missing in ("file", "frame_count", "last_capture_timestamp"):
        fields = msgpack.unpackb(notice.to_wire())
        del fields[missing]
        with pytest.raises(MalformedMessage) as caught:
            decode_segment_or_stored(msgpack.packb(fields))
        assert caught.value.reason == "missing_field"
    with pytest.raises(MalformedMessage) as caught:
        decode_segment(notice.to_wire())  # a reader of whole segments only
    assert caught.value.reason == "wrong_data_type"
