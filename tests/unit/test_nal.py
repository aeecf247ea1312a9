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
