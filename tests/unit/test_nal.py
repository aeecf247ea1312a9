from __future__ import annotations

import io
import random
from typing import Any

import av
import numpy as np
import pytest

from msightd.media import nal
from tests.support.clips import ENCODERS


def encode_one_frame(codec: str, width: int, height: int, pix_fmt: str = "yuv420p") -> bytes:
    """A real encoder's Annex B output for one black picture (parameter sets first)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=codec) as container:
        stream: Any = container.add_stream(ENCODERS[codec], rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "hevc":
            stream.options = {"x265-params": "log-level=error"}
        picture = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="bgr24")
        frame = picture.reformat(format=pix_fmt)
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.mark.parametrize("codec", ["h264", "hevc"])
@pytest.mark.parametrize(
    ("width", "height", "pix_fmt"),
    [
        (640, 480, "yuv420p"),
        (642, 362, "yuv420p"),
        (1920, 1080, "yuv420p"),
        (320, 240, "yuv422p"),
        (176, 144, "yuv444p"),
    ],
)
def test_picture_size_is_read_from_the_encoders_sps(codec: str, width: int, height: int, pix_fmt: str) -> None:
    stream = encode_one_frame(codec, width, height, pix_fmt)
    found = nal.parameter_sets(codec, stream)
    kinds = [nal.nal_type(codec, unit) for unit in found]
    assert kinds == ([32, 33, 34] if codec == "hevc" else [7, 8])
    sps = next(unit for unit in found if nal.is_sps(codec, nal.nal_type(codec, unit)))
    assert nal.sps_picture_size(codec, sps) == (width, height)


def test_split_handles_three_and_four_byte_start_codes() -> None:
    stream = b"\x00\x00\x00\x01\x67abc\x00\x00\x01\x68de\x00\x00\x00\x01\x65slice\x00"
    assert list(nal.split_annexb(stream)) == [b"\x67abc", b"\x68de", b"\x65slice\x00"]
    assert nal.join_annexb([b"\x67abc", b"\x68de"]) == b"\x00\x00\x00\x01\x67abc\x00\x00\x00\x01\x68de"


def test_parameter_sets_stop_at_the_first_slice() -> None:
    stream = nal.join_annexb([b"\x09\x10", b"\x67sps", b"\x68pps", b"\x65slice", b"\x67late"])
    assert nal.parameter_sets("h264", stream) == [b"\x67sps", b"\x68pps"]


def test_truncated_sps_is_a_bitstream_error() -> None:
    sps = nal.parameter_sets("h264", encode_one_frame("h264", 640, 480))[0]
    with pytest.raises(nal.BitstreamError):
        nal.sps_picture_size("h264", sps[:6])


def test_parameter_sets_are_what_splitting_the_whole_access_unit_finds() -> None:
    """The fast path (reading each NAL type before searching for its end) agrees with the plain definition
    on streams made of start codes, parameter sets, slices, empty and odd units."""
    rng = random.Random(15)
    pieces = [b"\x00\x00\x01", b"\x00\x00\x00\x01", b"\x67", b"\x68", b"\x65", b"\x41", b"\x06", b"\x40", b"\x42",
              b"\x44", b"\x26", b"\x00", b"x", b"\x09"]  # fmt: skip
    for _ in range(20_000):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for codec in nal.CODECS:
            expected = []
            for unit in nal.split_annexb(stream):
                kind = nal.nal_type(codec, unit)
                if nal.is_slice(codec, kind):
                    break
                if nal.is_parameter_set(codec, kind):
                    expected.append(unit)
            assert nal.parameter_sets(codec, stream) == expected, (codec, stream)


def encode_x264(frames: int, x264_params: str) -> bytes:
    """A real x264 stream (Annex B) of ``frames`` noise pictures, 160x120."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="h264") as container:
        stream: Any = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"x264-params": x264_params, "preset": "veryfast"}
        for index in range(frames):
            noise = np.random.default_rng(index).integers(0, 255, (120, 160, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(noise, format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def test_only_idr_pictures_start_random_access_not_ffmpegs_intra_refresh_recovery_points() -> None:
    """FFmpeg's parser flags H.264 pictures with a recovery point as keyframes; a segment cannot start there
    (FFmpeg's decoder shows almost nothing of it), so only the IDR counts."""
    stream = encode_x264(45, "intra-refresh=1:keyint=15")  # one IDR, then recovery points every 15 frames
    with av.open(io.BytesIO(stream), format="h264") as container:
        packets = [(bytes(packet), packet.is_keyframe) for packet in container.demux(video=0) if packet.size]
    flagged = [index for index, (_data, keyframe) in enumerate(packets) if keyframe]
    assert len(flagged) >= 3, f"FFmpeg should flag the recovery points too, flagged {flagged}"
    assert [index for index, (data, _) in enumerate(packets) if nal.starts_random_access("h264", data)] == [0]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_an_encoders_first_picture_starts_random_access_and_a_bare_non_idr_slice_does_not(codec: str) -> None:
    first = encode_one_frame(codec, 64, 64)
    assert nal.starts_random_access(codec, first)  # parameter sets and SEIs before the IDR/IRAP slice
    trailing = (b"\x02\x01" if codec == "hevc" else b"\x41") + b"\x9a\x00"  # TRAIL_R / non-IDR slice
    assert not nal.starts_random_access(codec, nal.START_CODE + trailing)
    assert not nal.starts_random_access(codec, b"")


def test_open_gop_i_frames_start_random_access_as_ffmpeg_says() -> None:
    """An open-GOP I-frame is exact from itself on (its leading B-frames are lost, as after any cut), so a
    segment may start there: the same frames FFmpeg flags."""
    # an IDR, then I-frames whose leading B-frames refer back across them (recovery points with a count of 0)
    open_gop = encode_x264(45, "open-gop=1:keyint=15:min-keyint=15:bframes=2:scenecut=0")
    with av.open(io.BytesIO(open_gop), format="h264") as container:
        packets = [(bytes(packet), packet.is_keyframe) for packet in container.demux(video=0) if packet.size]
    flagged = [index for index, (_data, keyframe) in enumerate(packets) if keyframe]
    assert len(flagged) >= 3, f"the open GOPs' I-frames should be flagged too, flagged {flagged}"
    assert [index for index, (data, _) in enumerate(packets) if nal.starts_random_access("h264", data)] == flagged


@pytest.mark.parametrize(
    ("sei", "exact"),
    [
        (b"\x06\x06\x01\xc4\x80", True),  # recovery point, recovery_frame_cnt 0
        (b"\x06\x06\x02\x15\x10\x80", False),  # recovery_frame_cnt 9 (intra refresh)
        (b"\x06\x05\x02\xaa\xbb\x06\x01\xc4\x80", True),  # after a user-data message
        (b"\x06\x06\x05\xc4\x80", False),  # a payload longer than the NAL unit
        (b"\x06\xff\xff", False),  # a payload type that never ends
        (b"\x06", False),
    ],
)
def test_exact_recovery_points_are_read_from_sei_messages(sei: bytes, exact: bool) -> None:
    assert nal.is_exact_recovery_point(sei) is exact
