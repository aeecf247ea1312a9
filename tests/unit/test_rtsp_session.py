"""What the RTSP client says about servers that are not cameras or misbehave: one clear error, the password
never in it, and no hang past the open timeout. The servers are sockets on loopback scripted here (the
GStreamer server cannot be made to misbehave); ``tests/integration/test_rtsp_client.py`` covers real ones."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from msightd.media.rtsp_session import RtspError, RtspSession, RtspUnsupported
from testbed.ports import free_port


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """Start a one-connection server that runs ``script`` on the accepted socket; returns its URL."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(script: Callable[[socket.socket], None]) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError):
                script(connection)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return f"rtsp://viewer:hunter2@127.0.0.1:{listener.getsockname()[1]}/stream"

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(5)


def _request(connection: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


def _open(url: str) -> RtspError:
    session = RtspSession(url, open_timeout_s=1.0, read_timeout_s=1.0)
    try:
        with pytest.raises(RtspError) as raised:
            session.open()
    finally:
        session.close()
    assert "hunter2" not in str(raised.value)
    return raised.value


def test_nothing_listening_is_named() -> None:
    error = _open(f"rtsp://viewer:hunter2@127.0.0.1:{free_port()}/stream")
    assert "cannot connect" in str(error)


def test_a_web_server_is_not_taken_for_a_camera(scripted: Callable[..., str]) -> None:
    def http(connection: socket.socket) -> None:
        _request(connection)
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    assert "is not an RTSP server" in str(_open(scripted(http)))


def test_a_server_that_never_answers_costs_the_open_timeout_only(scripted: Callable[..., str]) -> None:
    release = threading.Event()

    def silent(connection: socket.socket) -> None:
        _request(connection)
        release.wait(10)

    try:
        assert "did not answer OPTIONS in time" in str(_open(scripted(silent)))
    finally:
        release.set()


def test_an_endless_reply_is_refused_not_buffered(scripted: Callable[..., str]) -> None:
    def endless(connection: socket.socket) -> None:
        _request(connection)
        connection.sendall(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nX-Padding: " + b"a" * 2_000_000)

    assert "not a camera's" in str(_open(scripted(endless)))


def test_unsupported_authentication_and_redirects_go_to_ffmpeg(scripted: Callable[..., str]) -> None:
    def negotiate(connection: socket.socket) -> None:
        _request(connection)
        connection.sendall(b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Negotiate\r\n\r\n")

    assert isinstance(_open(scripted(negotiate)), RtspUnsupported)

    def redirect(connection: socket.socket) -> None:
        _request(connection)
        connection.sendall(b"RTSP/1.0 302 Found\r\nCSeq: 1\r\nLocation: rtsp://10.0.0.2/live\r\n\r\n")

    error = _open(scripted(redirect))
    assert isinstance(error, RtspUnsupported) and "rtsp://10.0.0.2/live" in str(error)
