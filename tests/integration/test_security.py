"""Redis with a password and TLS only, reached through MSight's environment variables and a rediss:// URL."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from testbed.ports import free_port, free_ports
from testbed.waiting import wait_for
from tests.integration.daemon import short_tempdir
from tests.integration.pipeline import launch, segments_on_disk
from tests.support.processes import Proc, command

PASSWORD = "s3cret pass"


@dataclass
class TlsRedis:
    port: int
    ca_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates (scripts/system-deps test installs it)")
    certs = tmp_path / "certs"
    certs.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=msightd-test-ca",
        cwd=certs,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=certs,
    )
    (certs / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
        cwd=certs,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(certs / "server.crt"),
            "--tls-key-file",
            str(certs / "server.key"),
            "--tls-ca-cert-file",
            str(certs / "ca.crt"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"rediss://:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, ssl_ca_certs=str(certs / "ca.crt"))
        wait_for(lambda: _pings(client), 30, "the TLS redis-server")
        client.close()
        yield TlsRedis(port, certs / "ca.crt")
    finally:
        server.kill()
        server.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):
        return False


def test_pipeline_over_tls_with_a_password(
    tls_redis: TlsRedis, sample_video: Path, tmp_path: Path, processes: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    # MSight's variables (no URL at all) for every node; the TLS CA comes from MSight's variable too
    for key, value in {
        "HOST": "127.0.0.1",
        "PORT": str(tls_redis.port),
        "PASSWORD": PASSWORD,
        "USE_TLS": "true",
        "TLS_CA_CERT_FILE": str(tls_redis.ca_file),
    }.items():
        monkeypatch.setenv(f"MSIGHT_REDIS_MESSAGE_BROKER_{key}", value)
    monkeypatch.delenv("MSIGHT_REDIS_URL", raising=False)
    dumper = launch(
        processes,
        tmp_path,
        "dumper",
        ["msight_launch_video_local_dumper", "-n", "d", "-st", "segs", "--save-dir", "videos"],
        redis_url="",
    )
    launch(
        processes,
        tmp_path,
        "aggregator",
        ["msight_launch_image_to_video_aggregator", "-n", "a", "-st", "frames", "-pt", "segs", "--buffer-size", "10"],
        redis_url="",
    )
    wait_for(lambda: dumper.has_event("node_ready"), 60, "the dumper to subscribe over TLS")
    launch(
        processes,
        tmp_path,
        "rtsp",
        ["msight_launch_rtsp", "-n", "cam", "-u", str(sample_video), "-pt", "frames", "--sensor-name", "c1", "--loop"],
        redis_url="",
    )
    wait_for(lambda: segments_on_disk(tmp_path / "videos"), 60, "a segment through the TLS broker")
    assert not dumper.has_event("broker_unreachable")


def test_wrong_password_is_reported_clearly(
    tls_redis: TlsRedis, tmp_path: Path, processes: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSIGHT_REDIS_MESSAGE_BROKER_TLS_CA_CERT_FILE", str(tls_redis.ca_file))
    dumper = launch(
        processes,
        tmp_path,
        "dumper",
        [
            "msight_launch_video_local_dumper",
            "-n",
            "d",
            "-st",
            "segs",
            "--save-dir",
            "videos",
            "--redis-url",
            f"rediss://:wrong@127.0.0.1:{tls_redis.port}/0",
        ],
        redis_url="",
    )
    failures = wait_for(lambda: dumper.has_event("broker_auth_failed"), 60, "the refused credentials to be reported")
    assert "credentials" in failures[0]["msg"]


def test_no_password_reaches_the_logs(sample_video: Path, tmp_path: Path, processes: list[Proc]) -> None:
    """Passwords holding '@', ':' and '/' in a camera URL and in the broker URL: every line the daemon and
    its nodes log while the camera and the broker are unreachable shows the hosts, never the secrets."""
    camera_port, broker_port = free_ports(2)
    broker = f"redis://user:r3d@is:pw@127.0.0.1:{broker_port}/0"
    cameras = {
        "cam_pyav": ("pyav", f"rtsp://admin:se@cr:et@127.0.0.1:{camera_port}/stream"),
        "cam_opencv": ("opencv", f"rtsp://admin:se@cr:et/pw@127.0.0.1:{camera_port}/stream"),
    }
    nodes = "".join(
        f'[[nodes]]\nname = "{name}"\nkind = "rtsp"\nurl = "{url}"\npublish_topic = "{name}"\n'
        f'sensor_name = "{name}"\ndecoder = "{decoder}"\n'
        for name, (decoder, url) in cameras.items()
    )
    config = tmp_path / "msightd.toml"
    config.write_text(
        f'[redis]\nurl = "{broker}"\n[metrics]\nenabled = false\n[web]\nenabled = false\n{nodes}'
        f'[[nodes]]\nname = "file_cam"\nkind = "rtsp"\nurl = "{sample_video}"\nloop = true\n'
        'publish_topic = "frames"\nsensor_name = "file_cam"\n'
        f'[[nodes]]\nname = "dumper"\nkind = "video_local_dumper"\nsubscribe_topic = "segs"\nsave_dir = "{tmp_path}"\n'
    )
    check = subprocess.run([command("msightd"), "check", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert f"broker: redis://***@127.0.0.1:{broker_port}/0" in check.stdout, check.stdout + check.stderr
    daemon = Proc(
        [command("msightd"), "run", "-c", str(config), "--runtime-dir", str(short_tempdir()), "--log-format", "json"],
        tmp_path / "daemon.log",
        env={"NOTIFY_SOCKET": ""},
    )
    processes.append(daemon)

    def seen(event: str, node: str) -> list[dict[str, Any]]:
        return [e for e in daemon.has_event(event) if e.get("node") == node]

    wait_for(
        lambda: (
            all(len(seen("source_open_failed", name)) >= 2 for name in cameras)
            and seen("publish_failed", "file_cam")
            and seen("bus_disconnected", "dumper")
        ),
        60,
        "the unreachable camera and broker to be reported",
    )
    # any local user can read a command line (ps): the nodes' must not carry the URLs
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(daemon.pid)], capture_output=True, text=True)
    command_lines = [Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in children.stdout.split()]
    assert len(command_lines) == 4 and all("msightd.host" in line for line in command_lines)
    assert daemon.terminate() == 0
    for name in cameras:
        assert seen("source_open_failed", name)[0]["url"] == f"rtsp://***@127.0.0.1:{camera_port}/stream"
    assert seen("broker_unreachable", "dumper")[0]["broker"] == f"redis://***@127.0.0.1:{broker_port}/0"
    assert daemon.has_event("daemon_started")[0]["broker"] == f"redis://***@127.0.0.1:{broker_port}/0"
    text = daemon.text() + check.stdout + check.stderr + "\n".join(command_lines)
    for secret in ("se@cr", "cr:et", "et/pw", "r3d", "is:pw"):
        assert secret not in text, f"{secret!r} leaked: {[line for line in text.splitlines() if secret in line][:3]}"
