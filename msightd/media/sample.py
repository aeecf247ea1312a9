"""A synthetic traffic-like clip, so the demo and the tests run with no camera and no downloaded footage."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np


def sample_frame(index: int, width: int, height: int) -> np.ndarray:
    """A road-coloured frame with moving 'vehicles' and the frame number burnt in (BGR)."""
    image = np.full((height, width, 3), (70, 75, 80), dtype=np.uint8)
    lane_y = height // 2
    cv2.line(image, (0, lane_y), (width, lane_y), (200, 200, 200), max(1, height // 120))
    for lane, (speed, colour) in enumerate(((9, (40, 40, 200)), (6, (200, 120, 30)), (12, (30, 180, 220)))):
        x = (index * speed * width // 320 + lane * width // 3) % (width + 80) - 80
        y = height // 4 + lane * height // 4
        cv2.rectangle(image, (x, y - height // 30), (x + width // 12, y + height // 30), colour, -1)
    cv2.putText(
        image,
        f"msightd sample {index:05d}",
        (10, height - 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        max(0.4, width / 1600),
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return image


def write_sample_video(path: Path, frame_count: int = 100, width: int = 640, height: int = 480, fps: int = 10) -> Path:
    """Write an H.264 MP4 of ``frame_count`` synthetic frames (idempotent: an existing file is kept)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with av.open(str(partial), mode="w", format="mp4") as container:
        stream: Any = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(fps)}
        for index in range(frame_count):
            frame = av.VideoFrame.from_ndarray(sample_frame(index, width, height), format="bgr24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    partial.rename(path)
    return path
