"""The loopback RTSP camera used by integration tests and benchmarks really works.

These tests fail (never skip) when the server cannot run: CI installs the
GStreamer apt packages, so an unavailable server means a broken environment.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import numpy as np
import pytest

from testbed.rtsp import RtspServer, open_capture, rtsp_server_available

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _require_rtsp_server() -> None:
    reason = rtsp_server_available()
    if reason is not None:
        pytest.fail(f"RTSP test server unavailable: {reason}", pytrace=False)


@pytest.fixture
def server() -> Iterator[RtspServer]:
    with RtspServer(width=640, height=480, fps=10) as srv:
        yield srv


def _read_frames(url: str, count: int) -> list[np.ndarray]:
    cap = open_capture(url)
    try:
        assert cap.isOpened(), f"OpenCV could not open {url}"
        frames: list[np.ndarray] = []
        for _ in range(count):
            ok, frame = cap.read()
            assert ok, f"read() failed after {len(frames)} frames from {url}"
            frames.append(frame)
        return frames
    finally:
        cap.release()


def test_testsrc_frames_have_expected_shape_and_move(server: RtspServer) -> None:
    assert server.url == f"rtsp://127.0.0.1:{server.port}/live.stream"
    first = server.wait_until_readable(timeout_s=15)
    assert first.shape == (480, 640, 3)

    t0 = time.monotonic()
    frames = _read_frames(server.url, 25)
    elapsed = time.monotonic() - t0

    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in frames)
    # Live 10 fps source: 25 frames cannot arrive much faster than ~2.4 s.
    assert elapsed > 1.5, f"25 frames in {elapsed:.2f}s: not paced like a live camera"
    # The ball and the timestamp overlay move: consecutive frames must differ.
    changed = [
        np.count_nonzero(np.abs(a.astype(np.int16) - b.astype(np.int16)) > 40) > 50
        for a, b in itertools.pairwise(frames)
    ]
    assert sum(changed) >= 0.9 * len(changed), f"frames did not change over time: {changed}"


def test_restart_same_port_is_readable_again(server: RtspServer) -> None:
    server.wait_until_readable(timeout_s=15)
    port, url, old_pid = server.port, server.url, server.pid

    server.restart()

    assert server.running
    assert server.pid != old_pid
    assert (server.port, server.url) == (port, url)
    frame = server.wait_until_readable(timeout_s=15)
    assert frame.shape == (480, 640, 3)
    assert len(_read_frames(url, 5)) == 5
