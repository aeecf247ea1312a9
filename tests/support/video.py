"""Test helpers that encode and decode videos: the package writes segments, tests read them back."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np

from msightd.media.video import EncodedVideo, EncoderSettings, SegmentEncoder


def encode_segment(frames: Sequence[np.ndarray], settings: EncoderSettings) -> EncodedVideo:
    """Encode BGR ``frames`` (all the same shape) into MP4 bytes at ``settings.fps``."""
    encoder = SegmentEncoder(settings)
    for image in frames:
        encoder.add(image)
    return encoder.finish()


@dataclass(frozen=True)
class VideoInfo:
    """What an MP4 holds, read back by decoding every frame."""

    frame_count: int
    width: int
    height: int
    fps: float
    codec: str
    pix_fmt: str
    frames: list[np.ndarray] | None = None


def probe_video(source: bytes | str | os.PathLike[str], keep_frames: bool = False) -> VideoInfo:
    """Decode a whole MP4 (bytes or path) and report what it really holds."""
    file: io.BytesIO | str = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
    with av.open(file, mode="r") as container:
        stream = container.streams.video[0]
        decoded: list[np.ndarray] = []
        count = 0
        for frame in container.decode(stream):
            count += 1
            if keep_frames:
                decoded.append(frame.to_ndarray(format="bgr24"))
        rate = stream.average_rate or stream.base_rate or 0
        return VideoInfo(
            frame_count=count,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(rate),
            codec=stream.codec_context.name,
            pix_fmt=str(stream.codec_context.pix_fmt),
            frames=decoded if keep_frames else None,
        )
