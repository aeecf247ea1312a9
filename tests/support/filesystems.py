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
def small_filesystem(
    mount_point: Path, size_bytes: int, kind: str = "tmpfs", image: Path | None = None
) -> Iterator[Path]:
    """Mount a ``kind`` ("tmpfs" or "ext4") filesystem of ``size_bytes`` on ``mount_point`` (created) and
    unmount it afterwards. An ext4 lives in ``image`` (made when missing, kept when given, so it can be
    mounted again), has no reserved blocks (root sees the free space anyone sees) and turns read-only on
    an error, as a recording disk is usually mounted (``errors=remount-ro``)."""
    require_root(f"a {kind} test filesystem")
    mount_point.mkdir(parents=True, exist_ok=True)
    keep_image = image is not None
    image = image or mount_point.with_name(f"{mount_point.name}.img")
    if kind == "tmpfs":
        _run("mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(mount_point))
    elif kind == "ext4":
        if shutil.which("mkfs.ext4") is None:
            pytest.fail("mkfs.ext4 missing (Debian: e2fsprogs)", pytrace=False)
        if not image.exists():
            with image.open("wb") as file:
                file.truncate(size_bytes)
            _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mount_point))
    else:
        raise ValueError(f"unknown filesystem kind {kind!r}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)
        if not keep_image:
            image.unlink(missing_ok=True)


def fail_filesystem(mount_point: Path) -> None:
    """Make the ext4 mounted on ``mount_point`` hit an error, as a failing disk does: mounted with
    ``errors=remount-ro``, the kernel turns it read-only at once, open files or not."""
    device = Path(
        subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(mount_point)], capture_output=True, text=True, check=True
        ).stdout.strip()
    ).name
    trigger = Path("/sys/fs/ext4") / device / "trigger_fs_error"
    if not trigger.exists():
        pytest.fail(f"{trigger} missing: this kernel cannot simulate an ext4 error", pytrace=False)
    trigger.write_text("msightd test: simulated disk error\n")


def remount(mount_point: Path, options: str) -> None:
    """``mount -o remount,<options>``: e.g. ``ro`` to make a mounted test filesystem read-only."""
    _run("mount", "-o", f"remount,{options}", str(mount_point))
