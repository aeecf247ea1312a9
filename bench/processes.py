"""Process groups, deadlines and the bench's one error type.

Every process the bench starts (the daemon, each ffmpeg) gets its own session so that cleanup can kill the
whole group, whatever it spawned, even when the run fails half-way: a leftover encoder would skew the next
measurement on a shared machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.waiting import wait_for


class BenchError(RuntimeError):
    """The run could not be completed; the message says what went wrong."""


def start_group(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session (process group), output to ``log_path``, so cleanup can kill it all."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Signal the process, wait, then SIGKILL its whole process group (whatever it left behind)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """:func:`testbed.waiting.wait_for` raising :class:`BenchError`, which the entry point reports as a failed run."""
    return wait_for(predicate, timeout_s, what, interval_s, error=BenchError)


def sleep_until(deadline: float) -> None:
    """Sleep to a ``time.monotonic()`` deadline, so the measured windows do not drift with the work between marks."""
    time.sleep(max(0.0, deadline - time.monotonic()))


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, for an error message that shows why a process failed without opening files."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
