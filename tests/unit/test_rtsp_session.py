"""What the RTSP client says about servers that are not cameras or misbehave: one clear error, the password
never in it, and no hang past the open timeout. The servers are sockets on loopback scripted here (the
GStreamer server cannot be made to misbehave); ``tests/integration/test_rtsp_client.py`` covers real ones."""

from __future__ import annotations

import contextlib
import hashlib
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


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n"
)


def _digest_fields(request: str) -> dict[str, str]:
    header = next(line for line in request.split("\r\n") if line.startswith("Authorization: Digest "))
    fields = {}
    for item in header.removeprefix("Authorization: Digest ").split(", "):
        key, _, value = item.partition("=")
        fields[key] = value.strip('"')
    return fields


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_digest_answers_are_rfc_2617s_and_a_stale_nonce_is_answered_anew(scripted: Callable[..., str]) -> None:
    requests: list[str] = []

    def camera(connection: socket.socket) -> None:
        def answer(request: str, status: str, extra: str = "", body: str = "") -> None:
            requests.append(request)
            cseq = next(line for line in request.split("\r\n") if line.startswith("CSeq:"))
            connection.sendall(
                f"RTSP/1.0 {status}\r\n{cseq}\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}".encode()
            )

        challenge = 'WWW-Authenticate: Digest realm="cam", nonce="{}"{}\r\n'
        answer(_request(connection), "401 Unauthorized", challenge.format("first", ', qop="auth"'))
        answer(_request(connection), "200 OK", "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER\r\n")
        answer(_request(connection), "401 Unauthorized", challenge.format("second", ", stale=true"))
        answer(_request(connection), "200 OK", "Content-Type: application/sdp\r\n", SDP)
        answer(
            _request(connection), "200 OK", "Session: 12345678;timeout=60\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n"
        )
        answer(_request(connection), "200 OK")
        _request(connection)  # TEARDOWN

    url = scripted(camera)
    session = RtspSession(url, open_timeout_s=2.0, read_timeout_s=2.0)
    try:
        track = session.open()
    finally:
        session.close()
    assert track.codec == "h264" and track.control_url.endswith("/stream/track1")
    options, describe = _digest_fields(requests[1]), _digest_fields(requests[3])
    ha1 = _md5("viewer:cam:hunter2")
    uri = url.replace("viewer:hunter2@", "")
    expected = _md5(f"{ha1}:first:{options['nc']}:{options['cnonce']}:auth:{_md5(f'OPTIONS:{uri}')}")
    assert (options["nonce"], options["uri"], options["response"]) == ("first", uri, expected)
    assert (describe["nonce"], describe["response"]) == ("second", _md5(f"{ha1}:second:{_md5(f'DESCRIBE:{uri}')}"))
    assert all("hunter2" not in request for request in requests)
