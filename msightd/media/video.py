"""Encode a segment's frames, as they arrive, into one MP4 file in memory.

Codecs:

* ``h264`` (default): libx264 through PyAV, yuv420p, plays in every browser. The PyPI OpenCV wheel has
  no H.264 encoder, which is why PyAV is here at all.
* ``hevc``: libx265 through PyAV: fewer bytes at the same quality for several times the CPU; Safari/Edge
  play it, Chrome and Firefox mostly do not.
* ``mp4v``: MPEG-4 Part 2 through OpenCV's ``VideoWriter`` (MSight's choice): cheapest to encode, biggest
  files, and browsers refuse it.

yuv420p needs even dimensions, so an odd width or height loses its last column/row (documented, logged
by the caller through ``EncodedVideo.cropped``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

from msightd.media.i420 import Planes, frame_planes

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


class I420Frame:
    """An empty I420 picture in a buffer the encoder takes as it is: fill :attr:`planes` (e.g. straight
    from a frame ring), then :meth:`SegmentEncoder.add_i420` it, to several encoders if segments overlap.
    Encoders may keep a reference to the buffer, so a picture is never refilled once added."""

    def __init__(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"I420 needs even sides, got {width}x{height}")
        self.height, self.width = height, width
        self.video_frame = av.VideoFrame(width, height, "yuv420p")
        self.planes: Planes = frame_planes(self.video_frame)


def even_crop(image: np.ndarray) -> np.ndarray:
    """Drop a trailing odd row/column so yuv420p can hold the image."""
    height, width = image.shape[:2]
    return image[: height - height % 2, : width - width % 2]


class SegmentEncoder:
    """Encodes one segment frame by frame, so the file is ready right after its last frame arrives and
    no decoded frames are held (a 100-frame 1280x960 buffer is 370 MB of BGR).

    The first frame fixes the size; later frames must have the same size. Not thread-safe: one owner.
    ``encode_seconds`` is the wall time spent inside the encoder (for the encode-duration metric).
    """

    def __init__(self, settings: EncoderSettings) -> None:
        self._settings = settings
        self._count = 0
        self._size: tuple[int, ...] | None = None  # (height, width) of the frames given
        self._cropped = False
        self._width = self._height = 0
        self._container: Any = None
        self._stream: Any = None
        self._time_base = Fraction(1)
        self._buffer = io.BytesIO()
        self._writer: cv2.VideoWriter | None = None
        self._path: str | None = None
        self.encode_seconds = 0.0

    @property
    def frame_count(self) -> int:
        return self._count

    def add(self, image: np.ndarray) -> None:
        """Add a BGR frame."""
        started = time.perf_counter()
        self._check_size(image.shape[:2])
        cropped = np.ascontiguousarray(even_crop(image))
        if self._writer is not None:
            self._writer.write(cropped)
        else:
            # OpenCV's BGR->I420 (BT.601, limited range: what swscale would do) is ~2x faster than swscale's
            planar: Any = cv2.cvtColor(cropped, cv2.COLOR_BGR2YUV_I420)
            self._encode(av.VideoFrame.from_ndarray(planar, format="yuv420p"))
        self._count += 1
        self.encode_seconds += time.perf_counter() - started

    def add_i420(self, picture: I420Frame) -> None:
        """Add a frame already in I420 (what a shared-memory frame ring holds): no colour conversion and,
        for H.264/HEVC, no copy either, the encoder takes ``picture``'s buffer as it is."""
        started = time.perf_counter()
        self._check_size((picture.height, picture.width))
        if self._writer is not None:
            self._writer.write(picture.video_frame.to_ndarray(format="bgr24"))
        else:
            self._encode(picture.video_frame)
        self._count += 1
        self.encode_seconds += time.perf_counter() - started

    def _check_size(self, size: tuple[int, ...]) -> None:
        if self._size is None:
            self._open(size[0], size[1])
        elif size != self._size:
            raise ValueError(f"frame size {size} differs from the segment's {self._size}")

    def _encode(self, frame: Any) -> None:
        frame.pts = self._count
        frame.time_base = self._time_base
        self._container.mux(self._stream.encode(frame))

    def _open(self, height: int, width: int) -> None:
        self._size = (height, width)
        self._height, self._width = height - height % 2, width - width % 2
        self._cropped = (self._height, self._width) != (height, width)
        settings = self._settings
        if settings.codec == "mp4v":
            handle, self._path = tempfile.mkstemp(suffix=".mp4", prefix="msightd-", dir=_scratch_dir())
            os.close(handle)
            self._writer = cv2.VideoWriter(
                self._path, cv2.VideoWriter.fourcc(*"mp4v"), settings.fps, (self._width, self._height)
            )
            if not self._writer.isOpened():
                self.abort()
                raise RuntimeError("OpenCV cannot open an mp4v VideoWriter; use --codec h264")
            return
        rate = Fraction(settings.fps).limit_denominator(1001)
        self._container = av.open(self._buffer, mode="w", format="mp4")
        stream: Any = self._container.add_stream(_AV_CODEC[settings.codec], rate=rate)
        stream.width, stream.height, stream.pix_fmt = self._width, self._height, "yuv420p"
        stream.codec_context.time_base = self._time_base = 1 / rate
        options = {"crf": str(settings.crf), "preset": settings.preset}
        if settings.codec == "hevc":
            options["x265-params"] = "log-level=error"
            stream.codec_tag = "hvc1"  # lets Apple players recognise HEVC in MP4
        stream.options = options
        stream.thread_count = settings.threads
        self._stream = stream

    def finish(self) -> EncodedVideo:
        """Flush the encoder and return the whole MP4."""
        if self._count == 0:
            raise ValueError("a segment needs at least one frame")
        started = time.perf_counter()
        if self._writer is not None:
            assert self._path is not None
            self._writer.release()
            self._writer = None
            with open(self._path, "rb") as file:
                data = file.read()
            self.abort()
        else:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None
            data = self._buffer.getvalue()
        self.encode_seconds += time.perf_counter() - started
        return EncodedVideo(data, self._settings.codec, self._width, self._height, self._count, self._cropped)

    def abort(self) -> None:
        """Drop the segment (nothing was published) and free what it holds."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._container is not None:
            with contextlib.suppress(Exception):  # half-written container: we only want it gone
                self._container.close()
            self._container = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None


def _scratch_dir() -> str | None:
    """RAM-backed scratch space when there is one: OpenCV can only write to a path."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
