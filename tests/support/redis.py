"""A Redis server for one test: a testcontainers container when a Docker engine answers, else a
``redis-server`` child on a free loopback port. Never the Redis that may listen on 6379."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import redis

from msightd.daemon.broker import RedisServerProcess
from testbed.ports import free_port
from testbed.waiting import wait_for


class RedisEndpoint(Protocol):
    url: str

    def stop(self) -> None:
        """Kill the server, as a crash would: nothing answers at this address until :meth:`start`."""

    def start(self) -> None:
        """Start the server again at the same address: a real restart, so it comes back empty unless it
        keeps an append-only file (``persistent``), in which case it comes back with what it held."""


def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no client library, no socket, no permission: all mean "no engine here"
        return False


class TcpRedisServer(RedisServerProcess):
    """The daemon's broker, on a loopback TCP port instead of its unix socket: the tests' "remote" Redis."""

    def __init__(self, port: int | None = None, work_dir: Path | None = None, **kwargs: Any) -> None:
        work_dir = work_dir or Path(tempfile.mkdtemp(prefix="msightd-test-redis-"))
        super().__init__(unix_socket=work_dir / "unused.sock", **kwargs)
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _listen_arguments(self) -> list[str]:
        return ["--port", str(self.port), "--bind", "127.0.0.1"]

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None


class LocalRedis:
    def __init__(self, persistent: bool = False) -> None:
        self._work_dir = Path(tempfile.mkdtemp(prefix="msightd-test-redis-"))
        self._server = TcpRedisServer(work_dir=self._work_dir, persist_dir=self._work_dir if persistent else None)
        self.url = self._server.url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.kill()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self._work_dir, ignore_errors=True)


class ContainerRedis:
    """The server runs in a container published on a fixed host port, so that stopping (killing the
    container) and starting it again keeps the address, as a restarted broker does."""

    def __init__(self, persistent: bool = False) -> None:
        from testcontainers.community.redis import RedisContainer

        # no RDB snapshots (a restart must not bring back an old one); an append-only file only if asked
        command = ["redis-server", "--save", "", "--appendonly", "yes" if persistent else "no"]
        self._container = RedisContainer("redis:7-alpine").with_bind_ports(6379, free_port()).with_command(command)
        self._container.start()
        host = self._container.get_container_host_ip()
        port = self._container.get_exposed_port(6379)
        self.url = f"redis://{host}:{port}/0"

    def start(self) -> None:
        self._container.get_wrapped_container().start()
        wait_for(self._answers, 30, f"the Redis container to answer on {self.url}", error=RuntimeError)

    def _answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        self._container.get_wrapped_container().kill()

    def remove(self) -> None:
        self._container.stop()


@contextmanager
def redis_for_test(persistent: bool = False) -> Iterator[RedisEndpoint]:
    """A private Redis; ``persistent``: it keeps an append-only file, so a restart keeps what it held."""
    endpoint: LocalRedis | ContainerRedis
    if docker_engine_answers():
        endpoint = ContainerRedis(persistent)
    elif shutil.which("redis-server") is None:
        raise RuntimeError("neither a Docker engine nor redis-server is available; apt install redis-server")
    else:
        endpoint = LocalRedis(persistent)
        endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.remove()


def keep_every_entry(redis_url: str, topic: str) -> None:
    """A consumer group that never reads: the broker must keep every entry of ``topic`` for it."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.xgroup_create(topic, "audit", id="0", mkstream=True)
    finally:
        client.close()
