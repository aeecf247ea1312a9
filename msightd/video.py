"""Turn a list of BGR frames into one MP4 file in memory, and read MP4s back.

Codecs:

* ``h264`` (default): libx264 through PyAV, yuv420p, plays in every browser. The PyPI OpenCV wheel has
  no H.264 encoder, which is why PyAV is here at all.
* ``hevc``: libx265 through PyAV: ~half the bytes at the same quality, ~4x the CPU; Safari/Edge play it,
  Chrome and Firefox mostly do not.
* ``mp4v``: MPEG-4 Part 2 through OpenCV's ``VideoWriter`` (MSight's choice): cheapest to encode, biggest
  files, and browsers refuse it.

yuv420p needs even dimensions, so an odd width or height loses its last column/row (documented, logged
by the caller through ``EncodedVideo.cropped``).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

CODECS = ("h264", "hevc", "mp4v")
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
_AV_CODEC = {"h264": "libx264", "hevc": "libx265"}


@dataclass(frozen=True)
class EncoderSettings:
    """How segments are encoded. ``crf`` and ``preset`` apply to h264/hevc only."""

    codec: str = "h264"
    fps: float = 10.0
    crf: int = 23
    preset: str = "veryfast"
    threads: int = 0  # x264/x265 threads per segment; 0 lets the encoder choose (one per core)


@dataclass(frozen=True)
class EncodedVideo:
    data: bytes
    codec: str
    width: int
    height: int
    frame_count: int
    cropped: bool


def even_crop(image: np.ndarray) -> np.ndarray:
    """Drop a trailing odd row/column so yuv420p can hold the image."""
    height, width = image.shape[:2]
    return image[: height - height % 2, : width - width % 2]


def encode_segment(frames: Sequence[np.ndarray], settings: EncoderSettings) -> EncodedVideo:
    """Encode BGR ``frames`` (all the same shape) into MP4 bytes at ``settings.fps``."""
    if not frames:
        raise ValueError("a segment needs at least one frame")
    first = frames[0]
    cropped_first = even_crop(first)
    cropped = cropped_first.shape != first.shape
    height, width = cropped_first.shape[:2]
    if settings.codec == "mp4v":
        data = _encode_opencv(frames, settings.fps, width, height)
    else:
        data = _encode_pyav(frames, settings, width, height)
    return EncodedVideo(data, settings.codec, width, height, len(frames), cropped)


def _encode_pyav(frames: Sequence[np.ndarray], settings: EncoderSettings, width: int, height: int) -> bytes:
    rate = Fraction(settings.fps).limit_denominator(1001)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream: Any = container.add_stream(_AV_CODEC[settings.codec], rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        options = {"crf": str(settings.crf), "preset": settings.preset}
        if settings.codec == "hevc":
            options["x265-params"] = "log-level=error"
            stream.codec_tag = "hvc1"  # lets Apple players recognise HEVC in MP4
        stream.options = options
        stream.thread_count = settings.threads
        for index, image in enumerate(frames):
            # OpenCV's BGR->I420 (BT.601, limited range: what swscale would do) is ~2x faster than swscale's
            planar = cv2.cvtColor(np.ascontiguousarray(even_crop(image)), cv2.COLOR_BGR2YUV_I420)
            frame = av.VideoFrame.from_ndarray(planar, format="yuv420p")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _scratch_dir() -> str | None:
    """RAM-backed scratch space when there is one: OpenCV can only write to a path."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _encode_opencv(frames: Sequence[np.ndarray], fps: float, width: int, height: int) -> bytes:
    handle, path = tempfile.mkstemp(suffix=".mp4", prefix="msightd-", dir=_scratch_dir())
    os.close(handle)
    try:
        writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot open an mp4v VideoWriter; use --codec h264")
        try:
            for image in frames:
                writer.write(np.ascontiguousarray(even_crop(image)))
        finally:
            writer.release()
        with open(path, "rb") as file:
            return file.read()
    finally:
        os.unlink(path)


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
