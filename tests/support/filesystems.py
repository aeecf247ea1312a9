"""Small real filesystems for storage tests: a tmpfs or a loop-mounted ext4 of a few MB, mounted for one test.

Mounting needs root. Off CI a test that needs it skips with the reason; on CI (``CI`` set, where the suite
runs as root) it fails, so that a CI that lost root cannot pass these tests by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def require_root(what: str) -> None:
    """Skip (off CI) or fail (on CI) unless running as root."""
    if os.geteuid() == 0:
        return
    reason = f"{what} needs root (to mount a small filesystem); CI runs the suite as root"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}", pytrace=False)


@contextmanager
def small_filesystem(mount_point: Path, size_bytes: int, kind: str = "tmpfs") -> Iterator[Path]:
    """Mount a ``kind`` ("tmpfs" or "ext4") filesystem of ``size_bytes`` on ``mount_point`` (created) and
    unmount it afterwards. An ext4 is made with no reserved blocks, so root sees the same free space as
    anyone else."""
    require_root(f"a {kind} test filesystem")
    mount_point.mkdir(parents=True, exist_ok=True)
    image = mount_point.with_name(f"{mount_point.name}.img")
    if kind == "tmpfs":
        _run("mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(mount_point))
    elif kind == "ext4":
        if shutil.which("mkfs.ext4") is None:
            pytest.fail("mkfs.ext4 missing (Debian: e2fsprogs)", pytrace=False)
        with image.open("wb") as file:
            file.truncate(size_bytes)
        _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        _run("mount", "-o", "loop", str(image), str(mount_point))
    else:
        raise ValueError(f"unknown filesystem kind {kind!r}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)
        image.unlink(missing_ok=True)


def remount(mount_point: Path, options: str) -> None:
    """``mount -o remount,<options>``: e.g. ``ro`` to make a mounted test filesystem read-only."""
    _run("mount", "-o", f"remount,{options}", str(mount_point))
