"""The daemon's small HTTP server: one class behind ``/metrics`` + ``/healthz`` and behind the web page.

Built on the standard library's ``ThreadingHTTPServer`` (no framework: the daemon serves a handful of
routes, read-only, to a few clients; every dependency in the supervisor's process is a risk to it).
A listener is a route table (first path segment -> handler) plus its policy:

- **Methods**: GET and HEAD only (everything here is read-only); others get 405.
- **Host check**: a listener bound to loopback answers only requests whose ``Host`` names loopback, so a
  web page elsewhere cannot reach it through DNS rebinding.
- **Token** (optional): every request needs ``Authorization: Bearer <token>``, the ``msightd_token``
  cookie, or ``?token=<token>`` once, which sets that cookie (HttpOnly, SameSite=Strict) and redirects to
  the same URL without it, so ``<video>`` and ``<img>`` elements work and the token leaves the address bar.
- **Bounded**: at most ``max_connections`` connections at a time (more are closed at once), and an idle
  connection is dropped after ``timeout_s``.

Handlers receive a :class:`Request` whose path is split into segments *before* percent-decoding, so an
encoded slash (``%2F``) can never join two segments; a segment that decodes to a slash, a backslash or a
NUL is refused with 400 before any handler runs.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import structlog

TOKEN_COOKIE = "msightd_token"
TOKEN_PARAM = "token"
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_TIMEOUT_S = 30.0
_FORBIDDEN_IN_SEGMENT = ("/", "\\", "\x00")
_LOOPBACK_NAMES = ("localhost",)
#: Headers every answer carries: no sniffing, no framing, no referrer, scripts only from this server.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
}


class BadRequest(ValueError):
    """A request this server refuses with 400; the message is shown to the client."""


@dataclass(frozen=True)
class Request:
    """One parsed request. ``segments`` are the percent-decoded path segments (empty ones dropped)."""

    method: str
    path: str
    segments: tuple[str, ...]
    query: Mapping[str, str]
    headers: Message

    def cookie(self, name: str) -> str | None:
        jar: SimpleCookie = SimpleCookie()
        for header in self.headers.get_all("Cookie") or ():
            with contextlib.suppress(CookieError):
                jar.load(header)
        morsel = jar.get(name)
        return morsel.value if morsel is not None else None


@dataclass
class Response:
    """What a handler returns: a body in memory, or an open file to stream ``length`` bytes from
    ``offset`` (the server closes it, then calls ``on_close``, e.g. to remove an export's temp dir)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    file: BinaryIO | None = None
    offset: int = 0
    length: int = 0
    on_close: Callable[[], None] | None = None

    def close(self) -> None:
        try:
            if self.file is not None:
                self.file.close()
        finally:
            if self.on_close is not None:
                self.on_close()


Handler = Callable[[Request], Response]


def text_response(status: int, message: str) -> Response:
    return Response(status=status, body=(message.rstrip("\n") + "\n").encode())


def parse_request_target(target: str) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """Split ``/a/b%20c?x=1`` into its path, decoded segments and query (first value of each key).

    Raises :class:`BadRequest` for a target that is not an absolute path or a segment that decodes to
    something that could change the path's structure (slash, backslash, NUL, ``.`` or ``..``).
    """
    parts = urlsplit(target)
    if not parts.path.startswith("/") or parts.scheme or parts.netloc:
        raise BadRequest("the request target must be an absolute path")
    segments = []
    for raw in parts.path.split("/"):
        if not raw:
            continue
        segment = unquote(raw, errors="strict")
        if segment in (".", "..") or any(bad in segment for bad in _FORBIDDEN_IN_SEGMENT):
            raise BadRequest(f"path segment {raw[:60]!r} is not allowed")
        segments.append(segment)
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, value)
    return parts.path, tuple(segments), query


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


def _host_name(host_header: str) -> str:
    """``127.0.0.1:9465`` -> ``127.0.0.1``; ``[::1]:80`` -> ``::1``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class TokenGuard:
    """Decides whether a request carries the listener's token. Constant-time comparisons."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    def check(self, request: Request) -> Response | None:
        """``None`` to let the request through, else the answer: a redirect that sets the cookie (for a
        good ``?token=``) or 401."""
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer ") and self._matches(authorization[len("Bearer ") :].strip()):
            return None
        if self._matches(request.cookie(TOKEN_COOKIE)):
            return None
        if self._matches(request.query.get(TOKEN_PARAM)):
            rest = {k: v for k, v in request.query.items() if k != TOKEN_PARAM}
            location = request.path + (f"?{urlencode(rest)}" if rest else "")
            cookie = f"{TOKEN_COOKIE}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict"
            return Response(status=303, headers={"Location": location, "Set-Cookie": cookie})
        response = text_response(401, "this msightd needs its web token: open the page once with ?token=<token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="msightd"'
        return response


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: HttpServer) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.owner = owner
        self._slots = threading.BoundedSemaphore(owner.max_connections)
        super().__init__(address, _RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.owner.log.warning("http_connection_refused", listener=self.owner.name, reason="too many connections")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HttpServer:
    """One listener: ``routes`` maps the first path segment (``""`` for ``/``) to a handler.

    Thread-safety: handlers run on one thread per connection and must be thread-safe.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        routes: Mapping[str, Handler],
        log: structlog.typing.FilteringBoundLogger,
        token: str | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self.log = log
        self.guard = TokenGuard(token) if token else None
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.loopback_only = is_loopback(host)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve from a background thread. Raises ``OSError`` if the address cannot be bound."""
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"http-{self.name}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def host_allowed(self, host_header: str | None) -> bool:
        if not self.loopback_only:
            return True
        return host_header is not None and is_loopback(_host_name(host_header))

    def dispatch(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            response = text_response(405, f"{request.method} is not allowed: this server is read-only")
            response.headers["Allow"] = "GET, HEAD"
            return response
        if not self.host_allowed(request.headers.get("Host")):
            return text_response(421, "this server answers only to a loopback Host (127.0.0.1, localhost, ::1)")
        if self.guard is not None:
            refusal = self.guard.check(request)
            if refusal is not None:
                return refusal
        handler = self.routes.get(request.segments[0] if request.segments else "")
        if handler is None:
            return text_response(404, f"no such page: {request.path[:200]}")
        try:
            return handler(request)
        except BadRequest as exc:
            return text_response(400, str(exc))


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "msightd"
    sys_version = ""

    def setup(self) -> None:
        self.connection = self.request
        self.connection.settimeout(self.server.owner.timeout_s)
        super().setup()

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def __getattr__(self, name: str) -> Any:
        # every other method (POST, PUT, DELETE, ...) is refused by dispatch() with 405
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        owner = self.server.owner
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True  # its body (if any) is not read
        try:
            path, segments, query = parse_request_target(self.path)
            request = Request(self.command, path, segments, query, self.headers)
            response = owner.dispatch(request)
        except (BadRequest, UnicodeDecodeError) as exc:
            response = text_response(400, str(exc) if isinstance(exc, BadRequest) else "the path is not valid UTF-8")
        except Exception:
            owner.log.exception("http_handler_failed", listener=owner.name, method=self.command)
            response = text_response(500, "internal error (see the daemon's log)")
        try:
            self._send(response)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # a player that seeks drops connections all the time
        finally:
            response.close()

    def _send(self, response: Response) -> None:
        length = len(response.body) if response.file is None else response.length
        self.send_response(response.status)
        headers = {**SECURITY_HEADERS, "Content-Type": response.content_type, **response.headers}
        headers["Content-Length"] = str(length)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.file is not None:
            _send_file(self.connection, response.file, response.offset, length)
        else:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the query may hold a token: requests are not logged by default

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.owner.log.debug(
            "http_request", listener=self.server.owner.name, method=self.command, status=int(code) if code else 0
        )


def _send_file(connection: socket.socket, file: BinaryIO, offset: int, length: int) -> None:
    sent = 0
    while sent < length:
        count = connection.sendfile(file, offset + sent, length - sent)
        if count == 0:
            raise BrokenPipeError("the file ended before its announced length")
        sent += count
