"""Talk HTTP to the daemon's listeners the way a hostile client would: exact bytes, no normalisation."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def raw_request(port: int, request: bytes, host: str = "127.0.0.1", timeout_s: float = 10.0) -> Answer:
    """Send ``request`` as is (it must ask for ``Connection: close``) and parse the one answer."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, _, header_bytes = head.partition(b"\r\n")
    headers = BytesHeaderParser().parsebytes(header_bytes + b"\r\n\r\n")
    return Answer(int(status_line.split()[1]), headers, body)


def get(
    port: int, target: str, headers: dict[str, str] | None = None, method: str = "GET", host_header: str | None = None
) -> Answer:
    """One request for ``target`` (sent byte for byte) with ``Host: 127.0.0.1:<port>`` unless told otherwise."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header or f'127.0.0.1:{port}'}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
