from __future__ import annotations

import io
import threading

import pytest

from msightd.upload.throttle import ThrottledReader, TokenBucket, UploadCancelled


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_holds_the_average_rate_after_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst_bytes=1000, clock=clock, sleep=clock.sleep)
    for _ in range(30):
        bucket.acquire(100)
    # 3000 bytes: the first 1000 ride the burst, the other 2000 take 2 s at 1000 B/s.
    assert clock.now == pytest.approx(2.0, abs=0.01)


def test_reader_returns_the_same_bytes_and_pays_for_each_block() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10_000, burst_bytes=10_000, clock=clock, sleep=clock.sleep)
    data = bytes(range(256)) * 200  # 51,200 bytes
    reader = ThrottledReader(io.BytesIO(data), bucket, None, block_bytes=4096)
    chunks = []
    while chunk := reader.read(8192):
        assert len(chunk) <= 4096
        chunks.append(chunk)
    assert b"".join(chunks) == data
    assert clock.now == pytest.approx((len(data) - 10_000) / 10_000, abs=0.01)
    reader.seek(0)
    assert reader.tell() == 0 and reader.read(10) == data[:10]


def test_a_set_cancel_flag_stops_the_body_mid_way() -> None:
    cancel = threading.Event()
    reader = ThrottledReader(io.BytesIO(b"x" * 1000), None, cancel, block_bytes=100)
    assert reader.read() == b"x" * 100
    cancel.set()
    with pytest.raises(UploadCancelled):
        reader.read()


def test_a_waiting_acquire_gives_up_when_cancelled() -> None:
    cancel = threading.Event()
    cancel.set()
    bucket = TokenBucket(1024, burst_bytes=1024)
    bucket.acquire(1024, cancel)  # within the burst: no wait, no check needed
    with pytest.raises(UploadCancelled):
        bucket.acquire(1024 * 60, cancel)  # would wait a minute
