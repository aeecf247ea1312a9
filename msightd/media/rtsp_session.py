"""An RTSP/1.0 client session (RFC 2326) that plays one video track over TCP and hands its RTP packets on.

Why not FFmpeg: its RTSP demuxer reads interleaved RTP with a ``poll`` and two or three ``recv`` calls per
packet, about 100 system calls per 1280x960 frame, which made demuxing half of a passthrough recorder's CPU
(README, Performance). This session receives whatever the socket holds in one call and walks the
interleaved frames in place, handing each RTP payload of the video track to a
:class:`~msightd.media.rtp_depacketizer.Depacketizer` as offsets into the receive buffer.

What cameras need and this does: Basic and Digest (MD5, with or without ``qop=auth``) authentication from
the URL's user info, a ``Content-Base`` for relative track URLs, the interleaved channel and session id the
camera picks, keepalives (``GET_PARAMETER``, or ``OPTIONS`` where it is not offered) and RTCP receiver
reports well inside the session timeout, RTSP replies interleaved with media, and connect, handshake and
read timeouts. What it refuses with :class:`RtspUnsupported`, so the caller can fall back to FFmpeg:
redirects, cameras that will not send RTP over TCP, authentication schemes other than these two, and
video that is not H.264/H.265.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from msightd.logs import redact_url
from msightd.media.rtp_depacketizer import Depacketizer
from msightd.media.sdp import SdpError, VideoTrack, session_control_url, video_track

USER_AGENT = "msightd"
_DEFAULT_PORT = 554
_DEFAULT_SESSION_TIMEOUT_S = 60  # RFC 2326 12.37
_RTCP_INTERVAL_S = 5.0
_BUFFER_BYTES = 1 << 20  # room for many interleaved frames
_FRAME_ROOM = 70_000  # free space kept: more than the largest interleaved frame (4 + 65,535 bytes)
_AUTH_PARAMETER = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')
_RESPONSE_END = b"\r\n\r\n"


class RtspError(OSError):
    """The camera could not be reached, refused a request or stopped sending (the message says which)."""


class RtspUnsupported(RtspError):
    """The camera needs something this client does not do (FFmpeg's may: the caller can fall back)."""


@dataclass(frozen=True)
class RtspResponse:
    status: int
    reason: str
    headers: dict[str, list[str]]  # lower-case names; a header sent twice keeps both values
    body: bytes

    def header(self, name: str) -> str:
        values = self.headers.get(name, [])
        return values[0] if values else ""


class _Credentials:
    """The user and password of the URL, and the challenge they answer (Basic or Digest)."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self._scheme = ""
        self._challenge: dict[str, str] = {}
        self._count = 0

    def accept(self, challenges: list[str]) -> None:
        """Take the camera's WWW-Authenticate offers: Digest if offered (the password never travels), else
        Basic. :raises RtspUnsupported: neither is offered."""
        by_scheme = {text.split(None, 1)[0].lower(): text for text in challenges if text.strip()}
        if "digest" in by_scheme:
            text = by_scheme["digest"]
            self._scheme = "digest"
            self._challenge = {m[0].lower(): m[1] or m[2] for m in _AUTH_PARAMETER.findall(text.split(None, 1)[1])}
            algorithm = self._challenge.get("algorithm", "MD5").upper()
            if algorithm != "MD5":
                raise RtspUnsupported(f"the camera asks for Digest authentication with {algorithm}; MD5 only")
            self._count = 0
        elif "basic" in by_scheme:
            self._scheme = "basic"
        else:
            offered = ", ".join(by_scheme) or "nothing"
            raise RtspUnsupported(f"the camera asks for authentication by {offered}; Basic and Digest only")

    @property
    def ready(self) -> bool:
        return bool(self._scheme)

    def header(self, method: str, uri: str) -> str:
        if self._scheme == "basic":
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return f"Basic {token}"
        challenge = self._challenge
        realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
        ha1 = _md5(f"{self.user}:{realm}:{self.password}")
        ha2 = _md5(f"{method}:{uri}")
        fields = {"username": self.user, "realm": realm, "nonce": nonce, "uri": uri}
        qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
        if "auth" in qops:
            self._count += 1
            count, cnonce = f"{self._count:08x}", os.urandom(8).hex()
            fields["response"] = _md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
            extra = f', qop=auth, nc={count}, cnonce="{cnonce}"'
        else:
            fields["response"] = _md5(f"{ha1}:{nonce}:{ha2}")
            extra = ""
        if "opaque" in challenge:
            fields["opaque"] = challenge["opaque"]
        if "algorithm" in challenge:
            extra += f", algorithm={challenge['algorithm']}"
        return "Digest " + ", ".join(f'{key}="{value}"' for key, value in fields.items()) + extra


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class RtspSession:
    """One camera connection playing its video track over TCP. Not thread-safe: one owner, who must
    :meth:`close` it. :meth:`open` does the handshake; :meth:`receive` then feeds the track's packets to a
    depacketizer until the camera stops."""

    def __init__(self, url: str, open_timeout_s: float, read_timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("rtsp", "rtsps"):
            raise RtspUnsupported(f"{redact_url(url)} is not an rtsp:// URL")
        if parts.scheme.lower() == "rtsps":
            raise RtspUnsupported("rtsps:// (RTSP over TLS) is read by FFmpeg, not this client")
        self._host = parts.hostname or ""
        self._port = parts.port or _DEFAULT_PORT
        netloc = self._host if ":" not in self._host else f"[{self._host}]"
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self._shown_url = redact_url(url)
        self._credentials = (
            _Credentials(unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
        )
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._socket: socket.socket | None = None
        self._sequence = 0
        self._session = ""
        self._keepalive_method = "OPTIONS"
        self._keepalive_every_s = _DEFAULT_SESSION_TIMEOUT_S / 2
        self._keepalive_at = 0.0
        self._rtcp_at = 0.0
        self._ssrc = int.from_bytes(os.urandom(4), "big")
        self._play_url = self.url
        self._rtp_channel, self._rtcp_channel = 0, 1
        self._buffer = bytearray(_BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._start = 0  # first byte not yet parsed
        self._end = 0  # first byte not yet received
        #: Bytes skipped while looking for the next interleaved frame (a camera writing garbage).
        self.skipped_bytes = 0
        self.track: VideoTrack | None = None

    # -- handshake -----------------------------------------------------------------------------------

    def open(self) -> VideoTrack:
        """Connect and play the video track. :raises RtspError: unreachable, refused or timed out (retry);
        :raises RtspUnsupported: the camera needs what this client does not do."""
        try:
            self._socket = socket.create_connection((self._host, self._port), timeout=self._open_timeout_s)
        except OSError as exc:
            raise RtspError(f"cannot connect to {self._shown_url}: {exc.strerror or exc}") from None
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + self._open_timeout_s
        options = self._request("OPTIONS", self.url, {}, deadline)
        if "GET_PARAMETER" in options.header("public").upper():
            self._keepalive_method = "GET_PARAMETER"
        described = self._request("DESCRIBE", self.url, {"Accept": "application/sdp"}, deadline)
        base = described.header("content-base") or described.header("content-location") or self.url
        sdp = described.body.decode("utf-8", "replace")
        try:
            track = video_track(sdp, base)
        except SdpError as exc:
            raise RtspUnsupported(str(exc)) from None
        self._play_url = session_control_url(sdp, base)
        transport = f"RTP/AVP/TCP;unicast;interleaved={self._rtp_channel}-{self._rtcp_channel}"
        setup = self._request("SETUP", track.control_url, {"Transport": transport}, deadline)
        self._take_session(setup)
        self._take_channels(setup.header("transport"))
        self._request("PLAY", self._play_url, {"Range": "npt=0.000-"}, deadline)
        self._stream_timeouts()
        now = time.monotonic()
        self._keepalive_at = now + self._keepalive_every_s
        self._rtcp_at = now + _RTCP_INTERVAL_S
        self.track = track
        return track

    def _stream_timeouts(self) -> None:
        """From here on the socket blocks, with the read timeout set in the kernel (SO_RCVTIMEO): Python's own
        timeouts would ``poll`` before every receive, doubling the system calls per frame."""
        assert self._socket is not None
        self._socket.settimeout(None)
        whole = int(self._read_timeout_s)
        interval = struct.pack("ll", whole, int((self._read_timeout_s - whole) * 1e6))
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)

    def _take_session(self, setup: RtspResponse) -> None:
        session, _, parameters = setup.header("session").partition(";")
        self._session = session.strip()
        if not self._session:
            raise RtspError(f"{self._shown_url} answered SETUP without a session id")
        found = re.search(r"timeout\s*=\s*(\d+)", parameters)
        timeout_s = int(found.group(1)) if found else _DEFAULT_SESSION_TIMEOUT_S
        self._keepalive_every_s = max(timeout_s / 2, 1.0)

    def _take_channels(self, transport: str) -> None:
        if "/TCP" not in transport.upper():
            raise RtspUnsupported(
                f"the camera offers {transport or 'no transport'}, not RTP over TCP: set rtsp_transport = 'udp'"
            )
        found = re.search(r"interleaved\s*=\s*(\d+)(?:-(\d+))?", transport)
        if found:
            self._rtp_channel = int(found.group(1))
            self._rtcp_channel = int(found.group(2)) if found.group(2) else self._rtp_channel + 1

    def _request(self, method: str, url: str, headers: dict[str, str], deadline: float) -> RtspResponse:
        """Send a request and read its answer, answering one authentication challenge on the way."""
        response = self._exchange(method, url, headers, deadline)
        if response.status == 401 and self._credentials is not None:  # the first challenge, or a new nonce
            self._credentials.accept(response.headers.get("www-authenticate", []))
            response = self._exchange(method, url, headers, deadline)
        if response.status == 401:
            if self._credentials is None:
                raise RtspError(f"{self._shown_url} needs credentials: give them in the URL (rtsp://user:password@...)")
            raise RtspError(f"{self._shown_url} refused the credentials (401): check the user and password in the URL")
        if 300 <= response.status < 400:
            raise RtspUnsupported(f"{self._shown_url} redirects ({response.status}) to {response.header('location')}")
        if response.status == 461:
            raise RtspUnsupported(
                f"{self._shown_url} will not send RTP over TCP (461 Unsupported Transport): set rtsp_transport = 'udp'"
            )
        if response.status == 404:
            raise RtspError(f"{self._shown_url} has no stream at this path (404): check the URL's path")
        if response.status != 200:
            raise RtspError(f"{self._shown_url} answered {method} with {response.status} {response.reason}")
        return response

    def _exchange(self, method: str, url: str, headers: dict[str, str], deadline: float) -> RtspResponse:
        self._send(method, url, headers)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RtspError(f"{self._shown_url} did not answer {method} in time (open timeout)")
            response = self._read_response(remaining)
            if response is not None:
                return response

    def _send(self, method: str, url: str, headers: dict[str, str]) -> None:
        assert self._socket is not None
        self._sequence += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self._sequence}", f"User-Agent: {USER_AGENT}"]
        if self._session:
            lines.append(f"Session: {self._session}")
        if self._credentials is not None and self._credentials.ready:
            lines.append(f"Authorization: {self._credentials.header(method, url)}")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        try:
            self._socket.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError as exc:
            raise self._connection_lost(exc) from None

    def _connection_lost(self, exc: OSError) -> RtspError:
        return RtspError(f"lost the connection to {self._shown_url}: {exc.strerror or exc}")

    def _read_response(self, timeout_s: float) -> RtspResponse | None:
        """The next RTSP reply in the buffer (interleaved frames before it are dropped: none are expected
        during the handshake), receiving more as needed; None if the wait went by."""
        while True:
            response = self._parse_response()
            if response is not None:
                return response
            if not self._fill(timeout_s):
                return None

    def _parse_response(self) -> RtspResponse | None:
        buffer, start = self._buffer, self._start
        head_end = buffer.find(_RESPONSE_END, start, self._end)
        if head_end < 0:
            return None
        head = bytes(buffer[start:head_end]).decode("latin-1")
        lines = head.split("\r\n")
        status_line = lines[0].split(None, 2)
        if len(status_line) < 2 or not status_line[0].startswith("RTSP/") or not status_line[1].isdigit():
            raise RtspError(f"{self._shown_url} is not an RTSP server (it answered {lines[0][:60]!r})")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int((headers.get("content-length") or ["0"])[0] or 0)
        body_start = head_end + len(_RESPONSE_END)
        if self._end - body_start < length:
            return None
        self._start = body_start + length
        reason = status_line[2] if len(status_line) > 2 else ""
        return RtspResponse(int(status_line[1]), reason, headers, bytes(buffer[body_start : body_start + length]))

    def _fill(self, timeout_s: float | None) -> bool:
        """Receive what the socket holds into the buffer; False if nothing came within ``timeout_s`` (None:
        the read timeout set for streaming). :raises RtspError: the camera closed the connection or it broke."""
        assert self._socket is not None
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buffer) - self._end < _FRAME_ROOM:
            unread = self._end - self._start
            self._buffer[:unread] = self._buffer[self._start : self._end]
            self._start, self._end = 0, unread
            if len(self._buffer) - unread < _FRAME_ROOM:
                raise RtspError(f"{self._shown_url} sent a reply of over {unread // 1000} KB: not a camera's")
        if timeout_s is not None:
            self._socket.settimeout(timeout_s)
        try:
            received = self._socket.recv_into(self._view[self._end :])
        except (TimeoutError, BlockingIOError):
            return False
        except OSError as exc:
            raise self._connection_lost(exc) from None
        if received == 0:
            raise RtspError(f"{self._shown_url} closed the connection")
        self._end += received
        return True

    # -- streaming -----------------------------------------------------------------------------------

    def depacketizer(self) -> Depacketizer:
        """A depacketizer for the track being played (after :meth:`open`)."""
        assert self.track is not None
        return Depacketizer(self.track.codec, self._rtp_channel, self.track.payload_type, self._rtcp_channel)

    def receive(self, depacketizer: Depacketizer) -> None:
        """Receive once and hand every complete interleaved frame to ``depacketizer``; RTSP replies (to
        keepalives) between them are read and dropped, stray bytes skipped and counted.

        :raises RtspError: nothing arrived within the read timeout, or the connection ended.
        """
        if not self._fill(None):
            raise RtspError(f"{self._shown_url} sent nothing for {self._read_timeout_s:g} s")
        buffer, end = self._buffer, self._end
        position = depacketizer.feed(buffer, self._start, end)
        while end - position >= 4 and buffer[position] != 0x24:
            if buffer.startswith(b"RTSP/", position):
                self._start = position
                reply = self._parse_response()
                if reply is None:
                    break
                if reply.status == 401 and self._credentials is not None:  # the nonce went stale: the next
                    self._credentials.accept(reply.headers.get("www-authenticate", []))  # keepalive answers anew
                position = self._start
            else:
                position += 1
                self.skipped_bytes += 1
            position = depacketizer.feed(buffer, position, end)
        self._start = position
        self._keep_alive()

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if now >= self._rtcp_at:
            self._rtcp_at = now + _RTCP_INTERVAL_S
            self._send_rtcp_report()
        if now >= self._keepalive_at:
            self._keepalive_at = now + self._keepalive_every_s
            self._send(self._keepalive_method, self._play_url, {})

    def _send_rtcp_report(self) -> None:
        """An empty receiver report and our CNAME (RFC 3550 6.4.2, 6.5.1): some cameras end a session whose
        client sends no RTCP."""
        assert self._socket is not None
        cname = USER_AGENT.encode()
        item = bytes((1, len(cname))) + cname + b"\x00"
        item += b"\x00" * (-len(item) % 4)
        report = struct.pack(">BBHI", 0x80, 201, 1, self._ssrc)
        description = struct.pack(">BBHI", 0x81, 202, 1 + len(item) // 4, self._ssrc) + item
        compound = report + description
        frame = struct.pack(">cBH", b"$", self._rtcp_channel, len(compound)) + compound
        try:
            self._socket.sendall(frame)
        except OSError as exc:
            raise self._connection_lost(exc) from None

    def close(self) -> None:
        """Say TEARDOWN (best effort, not waited for) and close the connection."""
        if self._socket is None:
            return
        if self._session:
            try:
                self._socket.settimeout(0.2)
                self._send("TEARDOWN", self._play_url, {})
            except OSError:
                pass
        self._socket.close()
        self._socket = None
