"""A Redis server for one test: a testcontainers container when a Docker engine answers, else a
``redis-server`` child on a free loopback port. Never the Redis that may listen on 6379."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from msightd.daemon.broker import RedisServerProcess
from testbed.ports import free_port


class RedisEndpoint(Protocol):
    url: str

    def stop(self) -> None:
        """Make the broker unreachable (a crash or a network cut)."""

    def start(self) -> None:
        """Bring it back at the same address."""


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
    def __init__(self) -> None:
        self._server = TcpRedisServer()
        self.url = self._server.url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.kill()


class ContainerRedis:
    """Stopping pauses the container: its address survives, like a network cut."""

    def __init__(self) -> None:
        from testcontainers.redis import RedisContainer

        self._container = RedisContainer("redis:7-alpine")
        self._container.start()
        host = self._container.get_container_host_ip()
        port = self._container.get_exposed_port(6379)
        self.url = f"redis://{host}:{port}/0"

    def start(self) -> None:
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status == "paused":
            wrapped.unpause()

    def stop(self) -> None:
        self._container.get_wrapped_container().pause()

    def remove(self) -> None:
        self.start()
        self._container.stop()


@contextmanager
def redis_for_test() -> Iterator[RedisEndpoint]:
    if docker_engine_answers():
        container = ContainerRedis()
        try:
            yield container
        finally:
            container.remove()
        return
    if shutil.which("redis-server") is None:
        raise RuntimeError("neither a Docker engine nor redis-server is available; apt install redis-server")
    local = LocalRedis()
    local.start()
    try:
        yield local
    finally:
        local.stop()
