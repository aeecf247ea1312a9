"""A real RTSP camera on loopback for tests and benchmarks, driven from the test venv.

The server itself (``rtsp_server.py`` next to this file) needs PyGObject and the
GStreamer RTSP server, which exist only for the system interpreter, so it runs
as a child process of ``/usr/bin/python3`` (override with the environment
variable ``MSIGHTD_TEST_SYSTEM_PYTHON``).  This module only uses the standard
library plus OpenCV/numpy (for :meth:`RtspServer.wait_until_readable`).

Typical use::

    with RtspServer(width=640, height=480, fps=10) as cam:
        cam.wait_until_readable(10)
        ...  # point msightd at cam.url
        cam.restart()  # camera outage: same URL/port comes back

Measured on a 2-core dev VM: ``READY`` after ~0.1 s, first decoded frame
~0.4-0.6 s later; server CPU ~6 % of a core for 640x480@10 testsrc, ~17 % for
1280x960@10 testsrc, ~1 % for the looped 1280x960@10 MP4 (no re-encoding); the
pipeline keeps running (and costing that) from the first client until stop().
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:  # cv2/numpy are imported lazily so that importing this module stays cheap
    import cv2
    import numpy as np

SYSTEM_PYTHON: Final = "/usr/bin/python3"
SYSTEM_PYTHON_ENV: Final = "MSIGHTD_TEST_SYSTEM_PYTHON"
SERVER_SCRIPT: Final = Path(__file__).with_name("rtsp_server.py")
DEFAULT_MOUNT: Final = "/live.stream"
LOOPBACK: Final = "127.0.0.1"
# TCP interleaving avoids UDP port juggling/loss on loopback; the small probe
# keeps OpenCV from buffering ~5 s of stream before returning the first frame.
OPENCV_FFMPEG_OPTIONS: Final = "rtsp_transport;tcp|analyzeduration;100000|probesize;100000"
_OPENCV_OPTIONS_ENV: Final = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_EXIT_MISSING_DEPS: Final = 2

Source = Literal["testsrc", "file"]


def system_python() -> str:
    """The interpreter that has ``gi``: ``$MSIGHTD_TEST_SYSTEM_PYTHON`` or ``/usr/bin/python3``.

    Read at call time (not import time) so a test can override it with monkeypatch.
    """
    return os.environ.get(SYSTEM_PYTHON_ENV) or SYSTEM_PYTHON


def rtsp_server_available(python: str | None = None, timeout_s: float = 30.0) -> str | None:
    """Return ``None`` if the RTSP server can run, else a human-readable reason.

    Runs ``rtsp_server.py --check`` with the system interpreter, i.e. exactly the
    import + plugin checks the real server does, so "available" cannot drift from
    "works".  Tests should ``pytest.fail`` (not skip) with the reason: CI installs
    the apt packages, so a missing server is a broken environment, not an option.
    """
    python = python or system_python()
    if not os.access(python, os.X_OK):
        return f"system python {python!r} not found or not executable (set ${SYSTEM_PYTHON_ENV})"
    try:
        proc = subprocess.run(
            [python, str(SERVER_SCRIPT), "--check"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {python} {SERVER_SCRIPT.name} --check: {exc}"
    if proc.returncode == 0:
        return None
    detail = proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}"
    return detail


@contextlib.contextmanager
def _opencv_ffmpeg_options(options: str) -> Iterator[None]:
    """Temporarily set the FFmpeg options OpenCV reads (from the env) when opening a capture.

    Restored afterwards so that the process environment is not permanently changed.
    """
    previous = os.environ.get(_OPENCV_OPTIONS_ENV)
    os.environ[_OPENCV_OPTIONS_ENV] = options
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_OPENCV_OPTIONS_ENV, None)
        else:
            os.environ[_OPENCV_OPTIONS_ENV] = previous


def open_capture(url: str, open_timeout_ms: int = 5000, read_timeout_ms: int = 3000) -> cv2.VideoCapture:
    """Open ``url`` with OpenCV's FFmpeg backend over RTSP/TCP with bounded timeouts.

    Without the timeouts a dead server makes ``open``/``read`` hang for ~30 s or more.
    The caller owns (and must ``release()``) the returned capture; check ``isOpened()``.
    """
    import cv2

    with _opencv_ffmpeg_options(OPENCV_FFMPEG_OPTIONS):
        return cv2.VideoCapture(
            url,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_timeout_ms],
        )


class RtspServer:
    """One ``rtsp_server.py`` child process serving ``rtsp://127.0.0.1:<port>/live.stream``.

    Every instance owns its process; nothing is shared between instances.  With
    ``port=None`` the OS picks a free port on the first :meth:`start` (no
    probe-then-bind race) and :meth:`restart` reuses it, so clients see the same
    URL come back after an outage.
    """

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 10,
        source: Source = "testsrc",
        file: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        port: int | None = None,
        mount: str = DEFAULT_MOUNT,
        python: str | None = None,
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Configure (but do not start) a server.

        ``source="file"`` streams ``file`` (an H.264 or H.265 MP4, or several played in
        turn) in an endless loop at its native size and rate; ``width``/``height``/``fps``
        then do not apply.
        ``python`` defaults to :func:`system_python` evaluated at :meth:`start`.
        """
        if source == "file" and file is None:
            raise ValueError("source='file' requires file=<path to an H.264 MP4>")
        if source not in ("testsrc", "file"):
            raise ValueError(f"unknown source {source!r}")
        self.width = width
        self.height = height
        self.fps = fps
        self.source: Source = source
        paths = [] if file is None else [file] if isinstance(file, str | os.PathLike) else list(file)
        self.files = [Path(path) for path in paths]
        self.file = self.files[0] if self.files else None
        self.mount = mount
        self.python = python
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = tuple(extra_args)
        self._port = port
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def _command(self) -> list[str]:
        cmd = [
            self.python or system_python(),
            str(SERVER_SCRIPT),
            "--host",
            LOOPBACK,
            "--port",
            str(self._port if self._port is not None else 0),
            "--mount",
            self.mount,
            "--source",
            self.source,
        ]
        if self.source == "file":
            for path in self.files:
                cmd += ["--file", str(path)]
        else:
            cmd += ["--width", str(self.width), "--height", str(self.height), "--fps", str(self.fps)]
        return cmd + list(self.extra_args)

    def start(self) -> RtspServer:
        """Spawn the server and block until it prints ``READY <port>`` (it is then listening).

        Raises ``RuntimeError`` with the server's stderr if it exits or stays silent
        past ``ready_timeout_s``; the child is killed in that case.
        """
        if self.running:
            raise RuntimeError(f"RTSP server already running (pid {self.pid})")
        self._reap()  # a previous child that died on its own
        self._close_stderr()
        # stderr goes to a file, not a pipe: GStreamer may log a lot and nobody
        # drains a pipe once we are running, which would eventually block the server.
        self._stderr = tempfile.TemporaryFile(prefix="rtsp_srv_")  # noqa: SIM115 - closed in stop()
        cmd = self._command()
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                start_new_session=True,  # a Ctrl-C on pytest must not race our own SIGTERM
            )
        except OSError as exc:
            self._close_stderr()
            raise RuntimeError(f"cannot start RTSP server {cmd!r}: {exc}") from exc
        line = self._read_ready_line(self._proc, self.ready_timeout_s)
        if line is None or not line.startswith("READY "):
            status = self._proc.poll()
            self._kill()
            stderr = self.stderr_text()
            self._reap()
            self._close_stderr()
            if status is None:
                what = f"did not print READY within {self.ready_timeout_s:.0f}s (killed)"
            else:
                what = f"exited with status {status} before READY"
                if status == _EXIT_MISSING_DEPS:
                    what += " (GStreamer RTSP server missing)"
            raise RuntimeError(f"RTSP server {what}; stdout={line!r}; command={cmd!r}; stderr:\n{stderr}")
        self._port = int(line.split()[1])
        return self

    @staticmethod
    def _read_ready_line(proc: subprocess.Popen[str], timeout_s: float) -> str | None:
        """First stdout line of ``proc`` or ``None`` on timeout/EOF (deadline-bounded)."""
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if sel.select(remaining):
                    # The server prints one short flushed line, so readline() cannot block
                    # for long once the fd is readable (EOF -> "").
                    line = proc.stdout.readline()
                    return line.strip() if line else None
        return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout_s``; always reaps. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._kill()
        self._reap()
        self._close_stderr()

    def restart(self) -> None:
        """Stop, then start again on the same port (simulates a camera outage/reboot)."""
        if self._port is None:
            raise RuntimeError("restart() needs a port: call start() first")
        self.stop()
        self.start()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stderr_text(self) -> str:
        """What the current server process has written to stderr so far (for error messages)."""
        if self._stderr is None:
            return ""
        # pread: the child shares this file's offset, so never move it.
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace").strip()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Last resort against leaked servers holding ports; stop() is the real API.
        with contextlib.suppress(Exception):
            self._kill()
            self._reap()
            self._close_stderr()

    # -- properties --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("port unknown until start() (port=None lets the OS choose)")
        return self._port

    @property
    def url(self) -> str:
        return f"rtsp://{LOOPBACK}:{self.port}{self.mount}"

    # -- client side -------------------------------------------------------------------

    def wait_until_readable(self, timeout_s: float = 15.0) -> np.ndarray:
        """Block until OpenCV can open :attr:`url` and decode one frame; return that frame.

        Retries open+read until ``timeout_s``; raises ``TimeoutError`` (with the
        server's stderr) otherwise.  Use it after start()/restart() so a test does
        not start its clock while the first media pipeline is still spinning up.
        """
        deadline = time.monotonic() + timeout_s
        last = "never tried"
        while True:
            if not self.running:
                raise RuntimeError(f"RTSP server is not running; stderr:\n{self.stderr_text()}")
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            cap = open_capture(self.url, open_timeout_ms=min(5000, remaining_ms), read_timeout_ms=3000)
            try:
                if cap.isOpened():
                    ok, frame = cap.read()
                    if ok and frame is not None:
                        return frame
                    last = "opened but read() returned no frame"
                else:
                    last = "VideoCapture not opened"
            finally:
                cap.release()
            time.sleep(0.2)
        raise TimeoutError(
            f"no frame from {self.url} within {timeout_s:.1f}s ({last}); server stderr:\n{self.stderr_text()}"
        )
