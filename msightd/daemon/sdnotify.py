"""systemd's notify protocol (``Type=notify``, ``WatchdogSec``) without a libsystemd dependency."""

from __future__ import annotations

import contextlib
import os
import socket
import time


class SystemdNotifier:
    """Sends READY/WATCHDOG/STOPPING/RELOADING to ``$NOTIFY_SOCKET``; does nothing outside systemd."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self._watchdog_interval_s = watchdog_usec / 2_000_000 if watchdog_usec else 0.0
        self._last_watchdog = 0.0

    def _send(self, message: str) -> None:
        if not self._address:
            return
        # OSError: systemd went away; nothing useful to do about it here
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.sendto(message.encode(), self._address)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def reloading(self) -> None:
        self._send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Ping the watchdog at half its period; cheap to call from every loop turn."""
        now = time.monotonic()
        if self._watchdog_interval_s and now - self._last_watchdog >= self._watchdog_interval_s:
            self._last_watchdog = now
            self._send("WATCHDOG=1")
