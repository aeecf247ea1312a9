"""Small H.264/H.265 clips made on the spot, and the checks that prove a file holds a camera's bytes.

Clips reuse :func:`msightd.media.sample.sample_frame` (moving boxes, frame number burnt in) and are encoded
with PyAV's libx264/libx265: B-frames on, so decode and presentation order differ (as from many cameras);
closed GOPs, as cameras send, so every keyframe starts an independently decodable segment.
"""

from __future__ import annotations

import hashlib
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from msightd.media import nal
from msightd.media.capture import CaptureSettings
from msightd.media.packets import PacketCapture
from msightd.media.sample import sample_frame
from testbed.rtsp import RtspServer, rtsp_server_available

ENCODERS = {"h264": "libx264", "hevc": "libx265"}


def write_clip(
    path: Path, codec: str = "h264", frames: int = 40, width: int = 640, height: int = 480, fps: int = 10, gop: int = 10
) -> Path:
    """An MP4 of ``frames`` synthetic pictures with a keyframe every ``gop`` frames (idempotent)."""
    if path.exists():
        return path
    options = {"g": str(gop), "keyint_min": str(gop), "preset": "veryfast", "sc_threshold": "0"}
    if codec == "hevc":
        options["x265-params"] = f"log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0"
    partial = path.with_name(f".{path.name}.partial")
    with av.open(str(partial), mode="w", format="mp4") as container:
        stream: Any = container.add_stream(ENCODERS[codec], rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        stream.thread_count = 1  # one slice per picture: what cameras send (the RTSP test server splits
        # an access unit of several IDR slices in two, as it repeats SPS/PPS before each of them)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(sample_frame(index, width, height), format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    partial.rename(path)
    return path


def mp4_sample_md5(access_unit: bytes) -> str:
    """MD5 of an Annex B access unit as an MP4 stores it: each NAL unit behind its 4-byte length.
    Equal to ffmpeg's framemd5 of that frame read back from the MP4 only if every NAL byte survived."""
    return hashlib.md5(b"".join(len(u).to_bytes(4, "big") + u for u in nal.split_annexb(access_unit))).hexdigest()


def framemd5(path: Path) -> list[str]:
    """Per-packet MD5s of the video in ``path`` as ``ffmpeg -i path -c copy -f framemd5 -`` reports them."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line.rsplit(",", 1)[1].strip() for line in result.stdout.splitlines() if not line.startswith("#")]


def passthrough_clips(folder: Path) -> dict[str, Path]:
    """GOP-10 clips the passthrough tests serve: H.264, H.265, and a smaller H.264 (a resolution change)."""
    return {
        "h264": write_clip(folder / "h264.mp4", "h264", frames=30, gop=10),
        "hevc": write_clip(folder / "hevc.mp4", "hevc", frames=30, gop=10),
        "h264_small": write_clip(folder / "small.mp4", "h264", frames=30, gop=10, width=320, height=240),
    }


def serve_files(files: list[Path]) -> RtspServer:
    """A real RTSP camera streaming ``files`` one after another, without re-encoding."""
    reason = rtsp_server_available()
    if reason is not None:
        pytest.fail(f"RTSP test server unavailable: {reason} (scripts/system-deps test installs it)", pytrace=False)
    return RtspServer(source="file", file=files)


def pictures(codec: str, access_unit: bytes) -> tuple[bytes, ...]:
    """The coded picture data (slice NAL units) of an access unit."""
    return tuple(u for u in nal.split_annexb(access_unit) if nal.is_slice(codec, nal.nal_type(codec, u)))


def file_pictures(path: Path, codec: str) -> list[tuple[bytes, ...]]:
    """The coded pictures of every access unit of a clip, in order."""
    capture = PacketCapture(CaptureSettings(str(path), True, "tcp", 5.0, 2.0, 1))
    try:
        return [pictures(codec, unit.data) for unit in iter(capture.read, None)]
    finally:
        capture.close()
