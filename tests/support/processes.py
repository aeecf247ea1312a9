"""Run msightd commands as real subprocesses and wait on what they produce."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
BIN_DIR = Path(sys.executable).parent


def command(name: str) -> str:
    """The console script installed beside this interpreter (the venv the tests run in)."""
    path = BIN_DIR / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the project first (pip install -e '.[test]')")
    return str(path)


class Proc:
    """A command whose stdout+stderr go to a log file that tests can read as JSON lines."""

    def __init__(
        self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        full_env = {**os.environ, **(env or {})}
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines. Stderr shares this file: a frozen node's faulthandler dump, written in pieces
        without newlines, may land in front of another process's log line, so an event may start mid-line
        (seen in CI: ``  File "{"event": "frame_captured", ...}``). A line cut by a crash is not an event."""
        events = []
        for line in self.text().splitlines():
            start = line.find('{"')
            if start != -1:
                with contextlib.suppress(json.JSONDecodeError):
                    events.append(json.loads(line[start:]))
        return events

    def has_event(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name]

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)
