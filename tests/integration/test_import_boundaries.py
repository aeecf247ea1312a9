"""The daemon process never loads the media stack: ``msightd check`` and a running ``msightd run`` import
neither cv2, av nor numpy (only the node processes do). Measured with ``python -X importtime``, which lists
every module the process imported, on real processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.ports import free_port
from testbed.waiting import wait_for

MEDIA_MODULES = ("cv2", "av", "numpy")
REPO_ROOT = Path(__file__).resolve().parents[2]


def imported_top_level(importtime_stderr: str) -> set[str]:
    """Top-level package names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    names = set()
    for line in importtime_stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", line.strip())
        if match:
            names.add(match.group(1).split(".")[0])
    return names


def test_msightd_check_imports_no_media_library() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "msightd.cli.daemon", "check", "-c", "etc/msightd.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = imported_top_level(done.stderr)
    assert "msightd" in imported, "importtime output not understood: the check below would prove nothing"
    assert not imported & set(MEDIA_MODULES), f"msightd check loaded {imported & set(MEDIA_MODULES)}"
    assert not imported & {"boto3", "botocore"}, "only the uploader's own process needs the S3 client"


@pytest.mark.timeout(90)
def test_a_running_daemon_imports_no_media_library(tmp_path: Path, sample_video: Path) -> None:
    """The whole start path (config, broker, metrics, supervisor, children started and running) and the
    shutdown, while its nodes (which do load them) run in their own processes."""
    config = tmp_path / "msightd.toml"
    config.write_text(
        f"""
[metrics]
enabled = false
[web]
port = {free_port()}
[[nodes]]
name = "cam"
kind = "rtsp"
url = "{sample_video}"
loop = true
publish_topic = "frames"
sensor_name = "cam"
[[nodes]]
name = "agg"
kind = "image_to_video_aggregator"
subscribe_topic = "frames"
publish_topic = "segments"
buffer_size = 10
[[nodes]]
name = "dump"
kind = "video_local_dumper"
subscribe_topic = "segments"
save_dir = "{tmp_path / "out"}"
"""
    )
    stderr_path = tmp_path / "daemon.err"
    with stderr_path.open("w") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "msightd.cli.daemon", "run", "-c", str(config),
             "--runtime-dir", str(tmp_path / "run"), "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=REPO_ROOT,
        )  # fmt: skip
        try:
            wait_for(lambda: list((tmp_path / "out").glob("*.json")), 60, "a segment written under the daemon")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
        finally:
            daemon.kill()
    text = stderr_path.read_text()
    # the children inherit stderr but not -X importtime: every importtime line is the daemon's own
    imported = imported_top_level(text)
    assert {"msightd", "redis", "prometheus_client"} <= imported
    assert not imported & set(MEDIA_MODULES), f"the daemon process loaded {imported & set(MEDIA_MODULES)}"
