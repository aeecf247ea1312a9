"""A private ``redis-server`` child: the daemon's default broker.

The daemon starts it on a unix socket in its runtime directory (no TCP port), so a field box needs no
Redis set up by hand. Pub/sub output buffers are raised: a subscriber briefly behind on large frames
would otherwise be disconnected silently by Redis's default limits.

With ``persist_dir`` (the daemon's ``<runtime_dir>/broker``) it keeps an append-only file there: every write is
in the file before its reply leaves, so when the server is killed (the OOM killer, a crash) and the
daemon starts it again, the streams come back with their consumer groups and pending lists, and no
frame or segment that a producer handed over is lost (``appendfsync everysec``: only an OS crash can
take the last second). It costs the broker a write per message and, now and then, a background rewrite
that compacts the file to what the streams still hold (they are bounded by MAXLEN). An append-only file
the server cannot load is moved aside (kept for a look, logged) and the server starts empty rather than
not at all.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis
import structlog

from msightd.pdeathsig import die_with_parent

MISSING_REDIS_HINT = (
    "redis-server is not installed; msightd needs it for its embedded broker "
    "(Debian/Ubuntu: apt install redis-server), or set [redis] url in the config to use an existing Redis"
)


#: The append-only file is compacted once it has grown past this (and doubled since the last compaction).
AOF_REWRITE_MIN_SIZE = "16mb"


class RedisServerError(RuntimeError):
    pass


class RedisServerProcess:
    """Owns one redis-server process listening on ``unix_socket`` only (no TCP port: nothing else on the box
    or the network can reach the daemon's broker; the socket is mode 0700)."""

    def __init__(
        self,
        unix_socket: Path,
        executable: str | None = None,
        log_file: Path | None = None,
        persist_dir: Path | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.unix_socket = unix_socket
        self.persist_dir = persist_dir
        self._executable = executable or shutil.which("redis-server") or ""
        self._log_file = log_file
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.unix_socket}?db=0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _arguments(self) -> list[str]:
        args = [
            self._executable,
            "--save",
            "",
            "--client-output-buffer-limit",
            "pubsub 512mb 256mb 60",
            "--protected-mode",
            "yes",
        ]
        if self.persist_dir is not None:
            args += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.persist_dir)]
            # the file keeps every entry ever added until a rewrite compacts it to what the streams hold (little,
            # with acknowledged entries trimmed): rewrite from 16 MB, not Redis's 64 MB, as it may sit in RAM
            args += ["--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE]
        else:
            args += ["--appendonly", "no"]
        args += self._listen_arguments()
        if self.persist_dir is None:
            args += ["--dir", str(self.unix_socket.parent)]
        args += ["--logfile", str(self._log_file) if self._log_file else ""]
        return args

    def _listen_arguments(self) -> list[str]:
        return ["--port", "0", "--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]

    def start(self, timeout_s: float = 10.0) -> None:
        if not self._executable or not os.access(self._executable, os.X_OK):
            raise RedisServerError(MISSING_REDIS_HINT)
        try:
            self._start(timeout_s)
        except RedisServerError as exc:
            moved = self._set_aside_append_only_files()
            if not moved:
                raise
            if self._log is not None:
                self._log.error(
                    "embedded_redis_data_set_aside",
                    moved_to=[str(path) for path in moved],
                    error=str(exc),
                    msg="the broker could not load its append-only file; it starts empty, the file is kept",
                )
            self._start(timeout_s)

    def _set_aside_append_only_files(self) -> list[Path]:
        """Rename what the server keeps on disk (``appendonlydir`` on Redis 7, ``appendonly.aof`` before)."""
        if self.persist_dir is None:
            return []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        for name in ("appendonlydir", "appendonly.aof"):
            path = self.persist_dir / name
            if path.exists():
                target = path.with_name(f"{name}.unloadable-{stamp}")
                path.rename(target)
                moved.append(target)
        return moved

    def _start(self, timeout_s: float) -> None:
        if self.persist_dir is not None:
            self.persist_dir.mkdir(parents=True, exist_ok=True)
        self.unix_socket.parent.mkdir(parents=True, exist_ok=True)
        self.unix_socket.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            self._arguments(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,  # never outlive the daemon, even after kill -9
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                    raise RedisServerError(
                        f"redis-server exited at start (code {self._process.returncode}): "
                        f"{(stderr.strip() + ' ' + self._log_tail()).strip()}"
                    )
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, OSError):
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RedisServerError(f"redis-server did not answer on {self.url} within {timeout_s:g} s")

    def _log_tail(self, lines: int = 4) -> str:
        """The end of the server's log file: why it would not start (with no log file it logs nowhere)."""
        if self._log_file is None:
            return ""
        try:
            text = self._log_file.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop it (SIGTERM, then SIGKILL) and remove its socket."""
        process = self._process
        self._process = None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr:
            process.stderr.close()
        self.unix_socket.unlink(missing_ok=True)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def keep_up(self, log: structlog.typing.FilteringBoundLogger) -> bool:
        """Start the server again if it died (nodes reconnect by themselves; with persistence it reloads what it
        held from its append-only file, without, that is gone). True if it was restarted."""
        if self.running():
            return False
        log.error("embedded_redis_died", msg="the embedded redis-server exited; starting it again")
        try:
            self.start()
        except RedisServerError as exc:
            log.error("embedded_redis_restart_failed", error=str(exc))
            return False
        log.info("embedded_redis_restarted", pid=self.pid)
        return True
