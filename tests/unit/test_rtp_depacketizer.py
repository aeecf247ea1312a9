"""RTP over interleaved TCP back into access units: every packetization RFC 6184 / RFC 7798 allows cameras
(single NAL units, aggregates, fragments), received in pieces of any size, with the things a camera or a
network does to a stream (lost packets, a lost marker, timestamp wrap, padding, header extensions, RTCP and
RTSP replies in between). The packets are made here, from the RFCs, independently of the code under test;
``tests/integration/test_rtsp_client.py`` checks the same against GStreamer's payloaders and FFmpeg."""

from __future__ import annotations

import struct

import pytest

from msightd.media import nal
from msightd.media.rtp_depacketizer import Depacketizer, RtpAccessUnit

CHANNEL, PAYLOAD_TYPE = 0, 96
START = b"\x00\x00\x00\x01"


def h264_nal(kind: int, size: int, fill: int) -> bytes:
    return bytes((0x60 | kind,)) + bytes((fill + i) % 251 + 1 for i in range(size - 1))


def hevc_nal(kind: int, size: int, fill: int) -> bytes:
    return bytes((kind << 1, 1)) + bytes((fill + i) % 251 + 1 for i in range(size - 2))


def packetize(nals: list[bytes], hevc: bool, mtu: int = 300, aggregate: bool = True) -> list[bytes]:
    """RTP payloads for one access unit: small units aggregated, large ones fragmented (RFC 6184 5.7.1 /
    5.8, RFC 7798 4.4.2 / 4.4.3)."""
    payloads: list[bytes] = []
    small: list[bytes] = []

    def flush_small() -> None:
        if len(small) == 1:
            payloads.append(small[0])
        elif small:
            header = bytes((48 << 1, 1)) if hevc else bytes((0x60 | 24,))
            payloads.append(header + b"".join(struct.pack(">H", len(n)) + n for n in small))
        small.clear()

    for unit in nals:
        if len(unit) <= mtu // 4 and aggregate:
            small.append(unit)
            continue
        flush_small()
        if len(unit) <= mtu:
            payloads.append(unit)
            continue
        header_size = 2 if hevc else 1
        kind = (unit[0] >> 1) & 0x3F if hevc else unit[0] & 0x1F
        body = unit[header_size:]
        pieces = [body[i : i + mtu] for i in range(0, len(body), mtu)]
        for index, piece in enumerate(pieces):
            flags = (0x80 if index == 0 else 0) | (0x40 if index == len(pieces) - 1 else 0)
            if hevc:
                payloads.append(bytes(((unit[0] & 0x81) | (49 << 1), unit[1], flags | kind)) + piece)
            else:
                payloads.append(bytes(((unit[0] & 0xE0) | 28, flags | kind)) + piece)
    flush_small()
    return payloads


def rtp(payload: bytes, sequence: int, timestamp: int, marker: bool, *, padding: int = 0, csrc: int = 0,
        extension: int = -1, payload_type: int = PAYLOAD_TYPE) -> bytes:  # fmt: skip
    flags = 0x80 | (0x20 if padding else 0) | (0x10 if extension >= 0 else 0) | csrc
    packet = struct.pack(">BBHII", flags, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF, timestamp, 1234)
    packet += b"\x00\x00\x00\x07" * csrc
    if extension >= 0:
        packet += struct.pack(">HH", 0xBEDE, extension) + b"\x11\x22\x33\x44" * extension
    packet += payload
    if padding:
        packet += b"\x00" * (padding - 1) + bytes((padding,))
    return packet


def interleaved(packet: bytes, channel: int = CHANNEL) -> bytes:
    return struct.pack(">cBH", b"$", channel, len(packet)) + packet


def stream(frames: list[list[bytes]], hevc: bool, first_timestamp: int = 1000, **options: int) -> bytes:
    data = b""
    sequence = 65530  # wraps within the test
    for index, nals in enumerate(frames):
        payloads = packetize(nals, hevc)
        for number, payload in enumerate(payloads):
            marker = number == len(payloads) - 1
            data += interleaved(
                rtp(payload, sequence, (first_timestamp + 9000 * index) & 0xFFFFFFFF, marker, **options)
            )
            sequence += 1
    return data


def feed(depacketizer: Depacketizer, data: bytes, piece: int) -> list[RtpAccessUnit]:
    """Receive ``data`` ``piece`` bytes at a time into a buffer, as a socket would hand it over."""
    buffer = bytearray()
    start = 0
    for offset in range(0, len(data), piece):
        buffer += data[offset : offset + piece]
        start = depacketizer.feed(buffer, start, len(buffer))
    assert start == len(buffer), "everything complete was taken"
    return depacketizer.completed


def h264_frames(count: int) -> list[list[bytes]]:
    frames = []
    for index in range(count):
        if index % 5 == 0:  # SPS, PPS, IDR: aggregated, aggregated, fragmented
            frames.append([h264_nal(7, 20, index), h264_nal(8, 6, index), h264_nal(5, 2000 + index, index)])
        else:  # two slices: one fragmented, one single
            frames.append([h264_nal(1, 900 + index, index), h264_nal(1, 200, index + 1)])
    return frames


def hevc_frames(count: int) -> list[list[bytes]]:
    frames = []
    for index in range(count):
        if index % 5 == 0:  # VPS, SPS, PPS, IDR_W_RADL
            frames.append(
                [hevc_nal(32, 24, index), hevc_nal(33, 40, index), hevc_nal(34, 8, index), hevc_nal(19, 2500, index)]
            )
        else:
            frames.append([hevc_nal(1, 1200 + index, index)])
    return frames


@pytest.mark.parametrize("piece", [1, 7, 1500, 1 << 20])
@pytest.mark.parametrize("hevc", [False, True])
def test_every_packetization_comes_back_as_the_access_units_sent(hevc: bool, piece: int) -> None:
    frames = hevc_frames(12) if hevc else h264_frames(12)
    units = feed(Depacketizer("hevc" if hevc else "h264", CHANNEL, PAYLOAD_TYPE), stream(frames, hevc), piece)
    assert [unit.data for unit in units] == [START + START.join(nals) for nals in frames]
    assert [unit.keyframe for unit in units] == [index % 5 == 0 for index in range(12)]
    assert [unit.timestamp for unit in units] == [9000 * index for index in range(12)]


def test_padding_header_extensions_and_contributing_sources_are_not_taken_for_video() -> None:
    frames = h264_frames(3)
    data = stream(frames, False, padding=4, csrc=2, extension=3)
    units = feed(Depacketizer("h264", CHANNEL, PAYLOAD_TYPE), data, 1 << 20)
    assert [unit.data for unit in units] == [START + START.join(nals) for nals in frames]


def test_rtcp_other_payload_types_and_an_rtsp_reply_are_left_alone() -> None:
    frames = h264_frames(2)
    rtcp = interleaved(struct.pack(">BBHI", 0x80, 200, 1, 99), channel=1)
    other = interleaved(rtp(h264_nal(1, 50, 3), 1, 5, True, payload_type=97))
    reply = b"RTSP/1.0 200 OK\r\nCSeq: 9\r\n\r\n"
    data = rtcp + stream(frames[:1], False) + other + rtcp
    depacketizer = Depacketizer("h264", CHANNEL, PAYLOAD_TYPE)
    buffer = bytearray(data + reply)
    assert depacketizer.feed(buffer, 0, len(buffer)) == len(data), "stops where the reply starts"
    assert [unit.data for unit in depacketizer.completed] == [START + START.join(frames[0])]


def test_a_lost_packet_drops_the_unit_it_broke_and_keeps_the_rest() -> None:
    frames = h264_frames(6)
    packets = []
    sequence = 0
    for index, nals in enumerate(frames):
        payloads = packetize(nals, False)
        for number, payload in enumerate(payloads):
            packets.append((index, rtp(payload, sequence, 9000 * index, number == len(payloads) - 1)))
            sequence += 1
    # frame 1: [fragmented slice (4 packets), single slice]: lose the fragmented slice's second packet
    lost_at = next(position for position, (index, _) in enumerate(packets) if index == 1) + 1
    data = b"".join(interleaved(packet) for position, (_, packet) in enumerate(packets) if position != lost_at)
    depacketizer = Depacketizer("h264", CHANNEL, PAYLOAD_TYPE)
    units = feed(depacketizer, data, 1 << 20)
    assert depacketizer.lost == 1
    assert [unit.data for unit in units] == [
        START + START.join(nals if index != 1 else nals[1:]) for index, nals in enumerate(frames)
    ]


def test_a_frame_whose_marker_was_lost_ends_where_the_next_timestamp_starts() -> None:
    frames = h264_frames(3)
    data = b""
    sequence = 0
    for index, nals in enumerate(frames):
        for payload in packetize(nals, False):
            data += interleaved(rtp(payload, sequence, 9000 * index, marker=False))
            sequence += 1
    units = feed(Depacketizer("h264", CHANNEL, PAYLOAD_TYPE), data, 1 << 20)
    assert [unit.data for unit in units] == [START + START.join(nals) for nals in frames[:2]], "the last waits"


def test_timestamps_keep_increasing_across_the_32_bit_wrap() -> None:
    frames = h264_frames(4)
    units = feed(Depacketizer("h264", CHANNEL, PAYLOAD_TYPE), stream(frames, False, first_timestamp=2**32 - 9000), 999)
    assert [unit.timestamp for unit in units] == [0, 9000, 18000, 27000]


RTCP_CHANNEL = 1
NTP_TO_UNIX_S = 2_208_988_800  # RFC 868: the NTP epoch is 1900-01-01


def sender_report(wall: float, rtp_timestamp: int) -> bytes:
    """An RTCP compound packet as cameras send it (RFC 3550 6.4.1, 6.5): a sender report saying that RTP
    time ``rtp_timestamp`` is ``wall`` (Unix seconds) on the camera's clock, then its CNAME."""
    seconds, fraction = (int(wall) + NTP_TO_UNIX_S) % 2**32, int((wall % 1) * 2**32)  # NTP seconds wrap in 2036
    report = struct.pack(">BBHIIIIII", 0x80, 200, 6, 1234, seconds, fraction, rtp_timestamp, 10, 5000)
    item = b"\x01\x04cam1\x00\x00"  # CNAME "cam1", end of list, padding to 32 bits
    description = struct.pack(">BBHI", 0x81, 202, 3, 1234) + item
    return interleaved(report + description, channel=RTCP_CHANNEL)


def camera_times(depacketizer: Depacketizer, units: list[RtpAccessUnit]) -> list[float]:
    report = depacketizer.sender_report
    assert report is not None, "a sender report was taken"
    return [report.time_of(unit.timestamp, 90000) for unit in units]


def test_sender_reports_give_each_frame_the_time_the_camera_sampled_it_across_the_wrap() -> None:
    frames = h264_frames(6)
    first = 2**32 - 18000  # the third frame's timestamp wraps to 0
    wall = 1_796_000_000.25
    video = stream(frames, False, first_timestamp=first)
    after_first = len(stream(frames[:1], False, first_timestamp=first))
    # after the first frame: RTP time 9000 (the fourth frame's, past the wrap) was sampled at `wall`
    report = sender_report(wall, (first + 3 * 9000) & 0xFFFFFFFF)
    depacketizer = Depacketizer("h264", CHANNEL, PAYLOAD_TYPE, RTCP_CHANNEL)
    units = feed(depacketizer, video[:after_first] + report + video[after_first:], 333)
    assert [unit.data for unit in units] == [START + START.join(nals) for nals in frames]
    assert camera_times(depacketizer, units) == pytest.approx([wall + (i - 3) * 0.1 for i in range(6)], abs=1e-6)
    newer = Depacketizer("h264", CHANNEL, PAYLOAD_TYPE, RTCP_CHANNEL)  # a later report replaces the mapping
    units = feed(newer, report + video + sender_report(wall + 7, (first + 5 * 9000) & 0xFFFFFFFF), 1 << 20)
    assert camera_times(newer, units)[5] == pytest.approx(wall + 7, abs=1e-6)


def test_a_sender_report_before_the_first_rtp_packet_is_placed_when_that_packet_comes() -> None:
    frames = h264_frames(3)
    wall = 1_796_000_000.5
    early = sender_report(wall, 1000 + 9000)  # RTP time of the second frame, before any frame was sent
    depacketizer = Depacketizer("h264", CHANNEL, PAYLOAD_TYPE, RTCP_CHANNEL)
    assert depacketizer.sender_report is None
    units = feed(depacketizer, early + stream(frames, False, first_timestamp=1000), 1 << 20)
    assert camera_times(depacketizer, units) == pytest.approx([wall - 0.1, wall, wall + 0.1], abs=1e-6)


def test_ntp_seconds_past_their_2036_wrap_stay_in_order() -> None:
    after_wrap = 2_085_978_496 + 100  # 2036-02-07T06:28:16Z is NTP second 2**32, i.e. 0 again: 100 s later
    depacketizer = Depacketizer("h264", CHANNEL, PAYLOAD_TYPE, RTCP_CHANNEL)
    units = feed(depacketizer, stream(h264_frames(1), False) + sender_report(after_wrap, 1000), 1 << 20)
    assert camera_times(depacketizer, units) == pytest.approx([after_wrap], abs=1e-6)


EXACT_RECOVERY = b"\x06\x06\x01\xc4\x80"  # SEI: recovery point, recovery_frame_cnt 0
I_SLICE = b"\x41\x88" + bytes(range(1, 200)) * 4  # non-IDR slice: first_mb_in_slice 0, slice_type 7 (I)
P_SLICE = b"\x41\x98" + bytes(range(1, 200)) * 4  # slice_type 5 (P)


@pytest.mark.parametrize(
    ("first_frame", "keyframe"),
    [
        ([EXACT_RECOVERY, I_SLICE], True),  # an open-GOP I-frame
        ([b"\x06\x06\x02\x15\x10\x80", I_SLICE], False),  # recovery_frame_cnt 9: intra refresh
        ([EXACT_RECOVERY, P_SLICE], False),  # a broken camera's recovery point on a P slice
        (
            [b"\x06\x05\xff\x91" + b"\x11" * 400 + EXACT_RECOVERY[1:], I_SLICE],
            True,
        ),  # 400 B of user data first: fragmented
        ([I_SLICE, EXACT_RECOVERY], False),  # after the slice it announces nothing
    ],
    ids=["open-gop", "intra-refresh", "p-slice", "fragmented-sei", "sei-after-slice"],
)
@pytest.mark.parametrize("aggregate", [True, False])
def test_an_i_frame_after_an_exact_recovery_point_is_a_keyframe_as_nal_says(
    first_frame: list[bytes], keyframe: bool, aggregate: bool
) -> None:
    """Open-GOP I-frames carry a recovery point with a count of 0; whatever the packetization, the
    depacketizer agrees with :func:`nal.starts_random_access` on the whole access unit."""
    frames = [first_frame, [P_SLICE]]
    data, sequence = b"", 0
    for index, nals in enumerate(frames):
        payloads = packetize(nals, False, aggregate=aggregate)
        for number, payload in enumerate(payloads):
            data += interleaved(rtp(payload, sequence, 9000 * index, number == len(payloads) - 1))
            sequence += 1
    depacketizer = Depacketizer("h264", CHANNEL, PAYLOAD_TYPE)
    units = feed(depacketizer, data, 1 << 20)
    assert [unit.keyframe for unit in units] == [keyframe, False] and depacketizer.lost == 0
    assert nal.starts_random_access("h264", units[0].data) is keyframe
