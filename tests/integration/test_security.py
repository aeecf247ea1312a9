"""Redis with a password and TLS only, reached through MSight's environment variables and a rediss:// URL."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from testbed.ports import free_port
from testbed.waiting import wait_for
from tests.integration.pipeline import launch, segments_on_disk
from tests.support.processes import Proc

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
