from __future__ import annotations

import cv2
import numpy as np
import pytest

from msightd.media.i420 import contiguous_planes, copy_planes
from msightd.media.sample import sample_frame
from msightd.media.video import EncoderSettings, I420Frame, SegmentEncoder
from tests.support.video import encode_segment, probe_video


@pytest.mark.parametrize(("codec", "decoded_name"), [("h264", "h264"), ("hevc", "hevc"), ("mp4v", "mpeg4")])
def test_segment_decodes_back_to_the_same_frames(codec: str, decoded_name: str) -> None:
    frames = [sample_frame(i, 320, 240) for i in range(12)]
    video = encode_segment(frames, EncoderSettings(codec=codec, fps=10))
    info = probe_video(video.data, keep_frames=True)
    assert (info.frame_count, info.width, info.height, info.codec, info.pix_fmt) == (
        12,
        320,
        240,
        decoded_name,
        "yuv420p",
    )
    assert info.fps == pytest.approx(10.0)
    assert info.frames is not None
    # lossy, but recognisably the same pictures in the same order
    errors = [float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(frames, info.frames, strict=True)]
    assert max(errors) < 12
    assert np.abs(info.frames[0].astype(int) - frames[5].astype(int)).mean() > max(errors)


def test_odd_dimensions_are_cropped_to_even() -> None:
    frames = [sample_frame(i, 321, 241) for i in range(3)]
    video = encode_segment(frames, EncoderSettings(fps=7.5))
    info = probe_video(video.data)
    assert video.cropped and (info.width, info.height) == (320, 240)
    assert info.fps == pytest.approx(7.5)


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_i420_pictures_encode_to_the_same_frames(codec: str) -> None:
    """The shared-memory path: I420 filled straight into the encoder's own frame (rows padded, 322 wide)."""
    frames = [sample_frame(i, 322, 240) for i in range(6)]
    encoder = SegmentEncoder(EncoderSettings(codec=codec, fps=10))
    for image in frames:
        picture = I420Frame(240, 322)
        assert picture.planes[0].strides[0] > 322, "the encoder's rows are padded: copies must honour that"
        planar = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        copy_planes(contiguous_planes(planar, 240, 322), picture.planes)
        encoder.add_i420(picture)
    info = probe_video(encoder.finish().data, keep_frames=True)
    assert (info.frame_count, info.width, info.height) == (6, 322, 240)
    assert info.frames is not None
    errors = [float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(frames, info.frames, strict=True)]
    assert max(errors) < 12
    assert np.abs(info.frames[0].astype(int) - frames[3].astype(int)).mean() > max(errors)


def test_an_i420_picture_needs_even_sides() -> None:
    with pytest.raises(ValueError, match="even"):
        I420Frame(241, 320)
