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
from pathlib import Path


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
    return None


def directory_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or ``None`` if it is gone: a directory removed and created again, or a
    disk mounted over it, has a new identity."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
