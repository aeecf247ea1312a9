"""The embedded redis-server's persistence, on real redis-server processes: a killed broker comes back
with its streams, consumer groups and pending lists; a file it cannot load is set aside, not fatal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog
from structlog.testing import LogCapture

from testbed.waiting import wait_for
from tests.support.redis import TcpRedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def servers() -> Iterator[list[TcpRedisServer]]:
    started: list[TcpRedisServer] = []
    yield started
    for server in started:
        server.stop()


def fill_and_read_some(client: redis.Redis) -> None:
    """Five entries in a stream, three of them delivered to a consumer and not acknowledged."""
    client.xgroup_create("frames", "aggregator", id="0", mkstream=True)
    for i in range(5):
        client.xadd("frames", {b"d": b"frame-%d" % i})
    client.xreadgroup("aggregator", "aggregator", {"frames": ">"}, count=3)


@pytest.mark.parametrize("persist", [True, False])
def test_a_killed_broker_comes_back_with_its_streams_only_when_persistent(
    tmp_path: Path, servers: list[TcpRedisServer], persist: bool
) -> None:
    server = TcpRedisServer(work_dir=tmp_path, persist_dir=tmp_path / "broker" if persist else None)
    servers.append(server)
    server.start()
    client = redis.Redis.from_url(server.url)
    fill_and_read_some(client)
    server.kill()  # SIGKILL, as the OOM killer would
    server.start()
    client = redis.Redis.from_url(server.url)
    if not persist:
        assert client.exists("frames") == 0, "memory only: everything went with the process"
        return
    assert client.xlen("frames") == 5
    assert client.xpending("frames", "aggregator")["pending"] == 3, "delivered, unacknowledged: still owed"
    rest = client.xreadgroup("aggregator", "aggregator", {"frames": ">"})
    assert [fields[b"d"] for _, fields in rest[0][1]] == [b"frame-3", b"frame-4"]


def test_the_append_only_file_is_compacted_when_the_streams_are_trimmed(
    tmp_path: Path, servers: list[TcpRedisServer]
) -> None:
    """24 segments of 1 MB, each written and then trimmed as acknowledged: the file does not keep them all."""
    data_dir = tmp_path / "broker"
    server = TcpRedisServer(work_dir=tmp_path, persist_dir=data_dir)
    servers.append(server)
    server.start()
    client = redis.Redis.from_url(server.url)
    for i in range(24):
        entry_id = client.xadd("segments", {b"d": bytes([i]) * 2**20})
        client.xtrim("segments", minid=entry_id, approximate=False)
    wait_for(lambda: int(client.info("persistence")["aof_rewrites"]) >= 1, 30, "a rewrite of the file")
    wait_for(lambda: not client.info("persistence")["aof_rewrite_in_progress"], 30, "the rewrite to end")
    size = sum(path.stat().st_size for path in data_dir.rglob("*") if path.is_file())
    assert size < 16 * 2**20, f"the append-only file still holds {size / 2**20:.0f} MB"
    assert client.xlen("segments") == 1
    client.close()


def test_an_append_only_file_that_cannot_be_loaded_is_set_aside(tmp_path: Path, servers: list[TcpRedisServer]) -> None:
    data_dir = tmp_path / "broker"
    (data_dir / "appendonlydir").mkdir(parents=True)
    (data_dir / "appendonlydir" / "appendonly.aof.manifest").write_text("not a manifest\n")
    capture = LogCapture()
    log = structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )
    server = TcpRedisServer(work_dir=tmp_path, persist_dir=data_dir, log=log, log_file=tmp_path / "redis.log")
    servers.append(server)
    server.start()
    assert redis.Redis.from_url(server.url).ping()
    [event] = [e for e in capture.entries if e["event"] == "embedded_redis_data_set_aside"]
    [kept] = event["moved_to"]
    assert Path(kept).name.startswith("appendonlydir.unloadable-")
    assert (Path(kept) / "appendonly.aof.manifest").read_text() == "not a manifest\n", "kept for a look"
    assert "manifest" in event["error"].lower()
