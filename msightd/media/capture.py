"""Reading a camera (or a video file): two decoders behind one small interface.

``opencv`` (the default, MSight's) hands out BGR pictures: what JPEG encoding and perception want. ``pyav``
hands out the decoder's own YUV picture and converts only when asked: for frames that go to a shared-memory
ring and on to an H.264 encoder, that skips two colour conversions per frame, OpenCV's YUV->BGR and our
BGR->I420 (their cost: README, Performance; OpenCV cannot return YUV: with ``CONVERT_RGB`` off it gives only
the Y plane). Both use FFmpeg underneath, with the same open and read timeouts, so a stalled camera is noticed
within seconds by either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import av
import cv2
import numpy as np

from msightd.logs import redact_url, redact_urls_in
from msightd.media.formats import Decoder
from msightd.media.i420 import Planes, copy_planes, frame_planes

_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
#: Small probe sizes cut the open time from ~1.3 s to ~0.2 s on an H.264 camera.
_FAST_PROBE = {"analyzeduration": "100000", "probesize": "100000"}


@dataclass(frozen=True)
class CaptureSettings:
    """What opening a source needs (from the RTSP node's options)."""

    url: str
    is_file: bool
    rtsp_transport: str
    open_timeout_s: float
    read_timeout_s: float
    decode_threads: int


class DecodedFrame:
    """One decoded picture in the decoder's format; BGR or I420 are made (once) only when asked for."""

    def __init__(self, bgr: np.ndarray | None = None, video_frame: Any = None) -> None:
        assert (bgr is None) != (video_frame is None)
        self._bgr = bgr
        self._video_frame = video_frame

    @property
    def shape(self) -> tuple[int, ...]:
        """(height, width, channels) of the BGR picture, without converting."""
        if self._bgr is not None:
            return self._bgr.shape
        return (self._video_frame.height, self._video_frame.width, 3)

    def bgr(self) -> np.ndarray:
        if self._bgr is None:
            self._bgr = self._video_frame.to_ndarray(format="bgr24")
        return self._bgr

    def copy_i420_into(self, destination: Planes) -> bool:
        """Copy the picture as I420 into ``destination`` (one copy, plane by plane) when the decoder made
        YUV (full-range or other YUV layouts are converted by swscale first); False for a BGR picture
        (the caller converts it where it is stored)."""
        frame = self._video_frame
        if frame is None or frame.width % 2 or frame.height % 2:
            return False
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        copy_planes(frame_planes(frame), destination)
        return True


class Capture(Protocol):
    def read(self) -> DecodedFrame | None:
        """The next picture; None when the source ended, failed or stalled past the read timeout."""

    def frame_rate(self) -> float:
        """The source's nominal frame rate (0 when unknown)."""

    def rewind(self) -> None:
        """Back to the first frame (files only)."""

    def close(self) -> None: ...


class OpenCvCapture:
    def __init__(self, settings: CaptureSettings) -> None:
        threads = [cv2.CAP_PROP_N_THREADS, settings.decode_threads] if settings.decode_threads else []
        if settings.is_file:
            self._capture = cv2.VideoCapture(settings.url, cv2.CAP_FFMPEG, threads)
        else:
            probe = "|".join(f"{k};{v}" for k, v in _FAST_PROBE.items())
            os.environ[_FFMPEG_OPTIONS_ENV] = f"rtsp_transport;{settings.rtsp_transport}|{probe}"
            params = [
                *threads,
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(settings.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(settings.read_timeout_s * 1000),
            ]
            self._capture = cv2.VideoCapture(settings.url, cv2.CAP_FFMPEG, params)
        if not self._capture.isOpened():
            self._capture.release()
            raise OSError(f"OpenCV cannot open {redact_url(settings.url)}")

    def read(self) -> DecodedFrame | None:
        ok, image = self._capture.read()
        return DecodedFrame(bgr=image) if ok and image is not None else None

    def frame_rate(self) -> float:
        return float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def rewind(self) -> None:
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self._capture.release()


def open_input(settings: CaptureSettings) -> tuple[Any, Any]:
    """Open ``settings.url`` with PyAV (RTSP transport, fast probe, open/read timeouts) and return
    (container, first video stream); :class:`OSError` when it cannot be opened (the caller retries).
    Shared by the decoding capture and the demux-only one (:mod:`msightd.media.packets`)."""
    options = {} if settings.is_file else {"rtsp_transport": settings.rtsp_transport, **_FAST_PROBE}
    if not settings.is_file:
        # The read timeout is FFmpeg's own socket timeout (microseconds), not PyAV's: PyAV checks its
        # timeouts in a callback that takes the GIL and calls into Python on every socket wait, dozens of
        # times per frame (~15% of demuxing, see the README); PyAV keeps the open timeout only.
        options["timeout"] = str(round(settings.read_timeout_s * 1e6))
    try:
        container: Any = av.open(settings.url, options=options, timeout=(settings.open_timeout_s, None))
    except av.FFmpegError as exc:
        # FFmpeg's message repeats the URL it was given, credentials included
        reason = redact_urls_in(str(exc), settings.url)
        raise OSError(f"PyAV cannot open {redact_url(settings.url)}: {reason}") from None
    if not container.streams.video:
        container.close()
        raise OSError(f"{redact_url(settings.url)} has no video stream")
    return container, container.streams.video[0]


class PyAvCapture:
    def __init__(self, settings: CaptureSettings) -> None:
        self._container, self._stream = open_input(settings)
        if settings.decode_threads != 1:
            self._stream.thread_type = "AUTO"
        self._stream.thread_count = settings.decode_threads
        self._frames = self._container.decode(self._stream)

    def read(self) -> DecodedFrame | None:
        try:
            return DecodedFrame(video_frame=next(self._frames))
        except (StopIteration, EOFError, OSError, av.FFmpegError):
            return None

    def frame_rate(self) -> float:
        rate: Fraction | None = self._stream.average_rate or self._stream.base_rate
        return float(rate) if rate else 0.0

    def rewind(self) -> None:
        self._container.seek(0)
        self._frames = self._container.decode(self._stream)

    def close(self) -> None:
        self._container.close()


def open_capture(decoder: Decoder, settings: CaptureSettings) -> Capture:
    """Open the source; :class:`OSError` when it cannot be opened (the caller retries)."""
    return PyAvCapture(settings) if decoder == "pyav" else OpenCvCapture(settings)
