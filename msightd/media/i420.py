"""I420 (planar yuv420p) pictures: the layout frame rings store and x264 takes, and copies between them.

A 1280x960 picture is 1.8 MB; every extra copy of it costs CPU on every frame, more when it lands in
freshly allocated memory (page faults). So pictures move *plane by plane* straight from where
they are to where they must be: from the decoder's frame into a ring slot (camera node), from a ring slot
into the encoder's frame (aggregator), one copy each, never through an intermediate array.

Two places hold I420 here: a contiguous ``(height*3/2, width)`` byte array (a ring slot: Y, then U, then
V, no padding) and a PyAV ``VideoFrame`` (three buffers, rows padded to the plane's ``line_size``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

#: Y, U and V of one picture: 2-D uint8 views, (height, width) then twice (height/2, width/2).
Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


class Picture(Protocol):
    """Somewhere an I420 picture can be copied to."""

    planes: Planes


def i420_bytes(height: int, width: int) -> int:
    return height * width * 3 // 2


def contiguous_planes(planar: np.ndarray, height: int, width: int) -> Planes:
    """Views of the planes of a contiguous I420 array (shape ``(height*3/2, width)``, even sides)."""
    flat = planar.reshape(-1)  # a view: the array is contiguous
    luma = height * width
    chroma = luma // 4
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2),
    )


class ContiguousPicture:
    """An I420 picture in one new contiguous array (shape ``(height*3/2, width)``)."""

    def __init__(self, height: int, width: int) -> None:
        self.array = np.empty((height * 3 // 2, width), dtype=np.uint8)
        self.planes = contiguous_planes(self.array, height, width)


def frame_planes(frame: Any) -> Planes:
    """Views (readable and writable, no copy) of a yuv420p ``av.VideoFrame``'s planes, row padding cut off."""
    views = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
        views.append(rows[: plane.height, : plane.width])
    y, u, v = views
    return y, u, v


def copy_planes(source: Planes, destination: Planes) -> None:
    """Copy a picture plane by plane; the shapes must match."""
    for src, dst in zip(source, destination, strict=True):
        np.copyto(dst, src)
