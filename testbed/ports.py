"""Listening ports for the servers the tests and benches start.

A port the OS hands out for ``bind(0)`` comes from the ephemeral range, the same range it uses for the
local end of every outgoing connection. Between picking such a port and the server binding it, any
connection on the machine (the server's own components talking to each other, as SeaweedFS's do) may
take it, and the server dies with "address already in use" (seen in CI). Ports below the ephemeral range
are never used for outgoing connections, so a port picked there and found free stays free unless another
listener takes it.

Test workers running side by side (pytest-xdist) each pick from their own slice of that range, so two
workers never pick the same port in the moment between one's check and its server's bind.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_LOWEST = 10000  # below this live well-known services (6379, 8080, 9090, ...)
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    """The first port the OS uses for outgoing connections (Linux's default when unreadable)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_slice(low: int, high: int) -> tuple[int, int]:
    """This process's share of ``[low, high)``: all of it, or one xdist worker's ``gwN`` of the workers' count."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1):
        return low, high
    width = (high - low) // int(count)
    start = low + (int(worker[2:]) % int(count)) * width
    return start, start + width


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class _PortCursor:
    """Ports handed out in turn from a random place in this process's slice. A fresh random pick for each
    call would, once in ~10,000 pairs, give two servers of one test the same port before either has bound
    it; in turn, a port comes back only after the whole slice has been handed out."""

    def __init__(self) -> None:
        self._next: int | None = None

    def take(self, low: int, high: int) -> int:
        if self._next is None or not low <= self._next < high:
            self._next = random.SystemRandom().randrange(low, high)
        port = self._next
        self._next = low + (port + 1 - low) % (high - low)
        return port


_CURSOR = _PortCursor()  # one per process: what it guards against is two picks in one process


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on loopback right now, outside the ephemeral range."""
    top = _ephemeral_start()
    if top - _LOWEST < 1000:  # an unusual range leaves no room below it: let the OS pick
        return [_os_port() for _ in range(count)]
    low, high = _worker_slice(_LOWEST, top)
    chosen: list[int] = []
    while len(chosen) < count:
        port = _CURSOR.take(low, high)
        if _bindable(port):
            chosen.append(port)
    return chosen


def free_port() -> int:
    """A TCP port free on loopback right now, outside the ephemeral range."""
    return free_ports(1)[0]


def _os_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
