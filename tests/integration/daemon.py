"""Start a real ``msightd run`` on a config written for the test, and look at it from outside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testbed.ports import free_port
from testbed.waiting import wait_for
from tests.support.processes import Proc, command


def pipeline_toml(
    video: Path | str,
    save_dir: Path,
    metrics_port: int,
    buffer_size: int = 10,
    extra: str = "",
    redis_url: str | None = None,
    web: str = "enabled = false",
    defaults: str = "",
) -> str:
    """``web`` is the body of the [web] table (off by default: tests run side by side; its default port is one);
    ``defaults``: more ``[defaults]`` lines (node options)."""
    redis = f'[redis]\nurl = "{redis_url}"\n' if redis_url else ""
    return f"""{redis}
[metrics]
port = {metrics_port}

[web]
{web}

[logging]
summary_interval_s = 2

[daemon]
grace_period_s = 15

[defaults]
restart_delay = 0.5
restart_delay_max = 2.0
{defaults}

[[nodes]]
name = "rtsp_node"
kind = "rtsp"
url = "{video}"
loop = true
publish_topic = "rtsp_images"
sensor_name = "test_camera"

[[nodes]]
name = "image_aggregator"
kind = "image_to_video_aggregator"
subscribe_topic = "rtsp_images"
publish_topic = "aggregated_video"
fps = 10.0
buffer_size = {buffer_size}

[[nodes]]
name = "video_dumper"
kind = "video_local_dumper"
subscribe_topic = "aggregated_video"
save_dir = "{save_dir}"
{extra}"""


class Daemon:
    def __init__(self, proc: Proc, runtime_dir: Path, config_path: Path, metrics_port: int) -> None:
        self.proc = proc
        self.runtime_dir = runtime_dir
        self.config_path = config_path
        self.metrics_port = metrics_port

    def status_command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command("msightd"), "status", *args, "--runtime-dir", str(self.runtime_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def status(self) -> dict[str, Any]:
        """The daemon's answer, healthy (exit 0) or not (exit 1)."""
        result = self.status_command("--json")
        assert result.returncode in (0, 1), result.stderr
        status: dict[str, Any] = json.loads(result.stdout)
        assert (result.returncode == 0) == status["health"]["ok"]
        return status

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {node["name"]: node for node in self.status()["nodes"]}

    def wait_ready(self) -> None:
        wait_for(
            lambda: self.proc.has_event("daemon_ready") or self.proc.process.poll() is not None,
            60,
            "the daemon to report all nodes started",
        )
        assert self.proc.process.poll() is None, self.proc.text()[-3000:]

    def child_pids(self) -> list[int]:
        """Every process whose parent is the daemon (nodes and the embedded redis-server)."""
        result = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in result.stdout.split()]


def shipped_frames(shm_dir: Path) -> str:
    """``[defaults]`` lines for etc/msightd.toml's frame settings: shared-memory frames, PyAV decoder."""
    return f'frame_encoding = "shm"\ndecoder = "pyav"\nshm_dir = "{shm_dir}"\n'


def short_tempdir() -> Path:
    """Unix socket paths are limited to 107 bytes: keep the runtime dir short."""
    return Path(tempfile.mkdtemp(prefix="msd-", dir="/tmp"))


@contextmanager
def running_daemon(config_text_for: Any, tmp_path: Path, processes: list[Proc]) -> Iterator[Daemon]:
    """``config_text_for(save_dir, metrics_port)`` returns the TOML; yields a ready daemon."""
    runtime_dir = short_tempdir()
    metrics_port = free_port()
    config_path = tmp_path / "msightd.toml"
    config_path.write_text(config_text_for(tmp_path / "videos", metrics_port))
    proc = Proc(
        [command("msightd"), "run", "-c", str(config_path), "--runtime-dir", str(runtime_dir), "--log-format", "json"],
        tmp_path / "daemon.log",
        env={"MSIGHT_EDGE_DEVICE_NAME": "test-edge", "NOTIFY_SOCKET": ""},
    )
    processes.append(proc)
    daemon = Daemon(proc, runtime_dir, config_path, metrics_port)
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        proc.kill()
        shutil.rmtree(runtime_dir, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
