"""The daemon's local control socket: ``msightd status`` asks the running daemon how its nodes are.

A unix socket in the runtime directory, mode 0600 (only the daemon's user can connect). Protocol: the
client sends one JSON line (``{"command": "status"}``) and reads one JSON document back.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"


class ControlServer:
    """Serves ``snapshot()`` to clients from a background thread. ``snapshot`` must be thread-safe."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._snapshot = snapshot
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._closed = threading.Event()

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        self._sock.listen(8)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    request = json.loads(conn.makefile("r").readline() or "{}")
                    if request.get("command") == "status":
                        reply: dict[str, Any] = self._snapshot()
                    else:
                        reply = {"error": f"unknown command {request.get('command')!r}; known: status"}
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except (OSError, ValueError):
                    continue

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self.path.unlink(missing_ok=True)


def request_status(path: Path, timeout_s: float = 5.0) -> dict[str, Any]:
    """Ask the daemon listening on ``path``; raises OSError when none does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(b'{"command": "status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply
