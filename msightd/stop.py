"""A stop flag that a signal handler may set.

``threading.Event.set()`` is not safe in a signal handler: the handler runs in the main thread, which may
be inside ``Event.wait()`` holding the event's internal lock, and ``set()`` then blocks on that lock
forever (seen: a node that never exited after SIGTERM). This flag is set with a plain attribute store and
one ``os.write`` to a pipe; waiting is ``select`` on the pipe, so nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
import select


class StopFlag:
    """One-way "stop now": set once, from anywhere (signal handlers and threads included), never cleared."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._write_fd, b"!")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or ``timeout`` seconds pass; return whether it is set. Any thread may wait."""
        if self._set:
            return True
        with contextlib.suppress(InterruptedError):
            select.select([self._read_fd], [], [], timeout)
        return self._set
