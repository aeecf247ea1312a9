"""Is the save directory usable right now? A missing, unwritable or unmounted save directory is an outage
of the disk (a disk that mounts late, a network share that is not up, a directory removed while running),
not a wrong configuration: the dumper keeps running, keeps segments unacknowledged in the broker, says so
once, retries with backoff and writes as soon as this says the directory is usable.

With ``require_mount`` the directory must lie on a filesystem mounted below ``/`` (the save directory or
one of its parents is a mount point): an empty mount point (the disk is not mounted) is refused instead of
silently filling the root filesystem, and no directory is created above the mount point.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from msightd.backoff import Backoff
from msightd.storage.catalog import EventLog


def mount_point_of(path: Path) -> Path | None:
    """The nearest existing mount point at or above ``path``, other than ``/`` (``None`` if there is none)."""
    for candidate in (path, *path.parents):
        if candidate == Path(candidate.anchor):
            return None
        if os.path.ismount(candidate):
            return candidate
    return None


def save_dir_problem(save_dir: Path, require_mount: bool) -> str | None:
    """Why ``save_dir`` cannot take segments now (``None`` when it can). Creates it when missing (never
    above its mount point with ``require_mount``). The answer is a sentence for an operator."""
    if require_mount and mount_point_of(save_dir) is None:
        return (
            f"{save_dir} is not on a mounted filesystem (require_mount = true and no mount point between it "
            "and /): mount the disk, or set require_mount = false"
        )
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {save_dir}: {exc.strerror or exc}"
    if not save_dir.is_dir():
        return f"{save_dir} is not a directory"
    try:
        read_only = bool(os.statvfs(save_dir).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return f"cannot inspect {save_dir}: {exc.strerror or exc}"
    if read_only:
        return f"{save_dir} is on a read-only filesystem"
    if not os.access(save_dir, os.W_OK | os.X_OK):
        return f"no permission to write {save_dir} (as uid {os.geteuid()})"
    return _probe(save_dir)


def _probe(save_dir: Path) -> str | None:
    """Create and remove an empty file: the only check that sees a filesystem the kernel made read-only
    after an error (its mount flags still say read-write) or a server that refuses writes."""
    probe = save_dir / f".msightd-{os.getpid()}-probe.tmp"  # a dead writer's temp name: swept if left
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        probe.unlink()
    except OSError as exc:
        return f"cannot write in {save_dir}: {exc.strerror or exc}"
    return None


def directory_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or ``None`` if it is gone: a directory removed and created again, or a
    disk mounted over it, has a new identity."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class SaveDirectory:
    """Whether the dumper may write now, checked cheaply before every write (one ``stat``, plus the mount
    check with ``require_mount``) and fully (:func:`save_dir_problem`) with backoff while it is not.

    ``on_usable`` runs each time the directory becomes usable (prepare the writer, open the catalog; an
    ``OSError`` from it counts as still unusable); ``on_lost`` when a usable directory goes away or is
    replaced (close the catalog of the old one). The first problem of an outage is logged as an error, the
    end of it once; the ``msightd_save_dir_usable`` gauge follows; ``failed_checks`` counts the full
    checks that found it unusable (one refused write each). One owner thread.
    """

    def __init__(
        self,
        path: Path,
        require_mount: bool,
        log: EventLog,
        gauge: Callable[[bool], None],
        on_usable: Callable[[], None],
        on_lost: Callable[[], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.path = path
        self._require_mount = require_mount
        self._log = log
        self._gauge = gauge
        self._on_usable = on_usable
        self._on_lost = on_lost
        self._backoff = backoff or Backoff(0.5, 5.0)
        self._identity: tuple[int, int] | None = None
        self._retry_at = 0.0
        self._unusable_since: float | None = None
        self.problem: str | None = None
        self.failed_checks = 0

    def usable(self) -> bool:
        """True when a write may go ahead now."""
        if self._identity is not None:
            if directory_identity(self.path) == self._identity and (
                not self._require_mount or mount_point_of(self.path) is not None
            ):
                return True
            self._lose("the save directory was removed, replaced or unmounted")
        now = time.monotonic()
        if now < self._retry_at:
            return False
        problem = save_dir_problem(self.path, self._require_mount)
        if problem is None:
            try:
                self._on_usable()
            except OSError as exc:
                problem = f"cannot prepare {self.path}: {exc.strerror or exc}"
        if problem is not None:
            self._unusable(problem, now)
            return False
        self._identity = directory_identity(self.path)
        self._backoff.reset()
        self._gauge(True)
        if self._unusable_since is not None:
            self._log.info(
                "save_dir_usable",
                save_dir=str(self.path),
                outage_seconds=round(now - self._unusable_since, 3),
                msg=f"save directory {self.path} is usable again; writing what waited",
            )
        self._unusable_since = None
        self.problem = None
        return True

    def failed(self) -> None:
        """A write failed in a way that may mean the directory itself is gone: check it fully next time."""
        if self._identity is not None:
            self._lose(None)

    def _lose(self, reason: str | None) -> None:
        self._identity = None
        self._retry_at = 0.0
        self._on_lost()
        if reason is not None:
            self._log.warning("save_dir_changed", save_dir=str(self.path), msg=f"{reason}: checking it again")

    def _unusable(self, problem: str, now: float) -> None:
        self._retry_at = now + self._backoff.next_delay()
        self.failed_checks += 1
        self._gauge(False)
        self.problem = problem
        if self._unusable_since is None:
            self._unusable_since = now
            self._log.error(
                "save_dir_unusable",
                save_dir=str(self.path),
                problem=problem,
                msg=f"cannot write segments: {problem}; they wait (unacknowledged) and are written as soon as "
                "the directory is usable",
            )
