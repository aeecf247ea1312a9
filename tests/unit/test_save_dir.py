from __future__ import annotations

import shutil
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from msightd.backoff import Backoff
from msightd.storage.save_dir import SaveDirectory, directory_identity, mount_point_of, save_dir_problem
from tests.support.filesystems import remount, small_filesystem


def test_a_missing_save_dir_is_created(tmp_path: Path) -> None:
    assert save_dir_problem(tmp_path / "a" / "b", require_mount=False) is None
    assert (tmp_path / "a" / "b").is_dir()


def test_a_path_through_a_file_is_a_problem_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    problem = save_dir_problem(tmp_path / "file" / "videos", require_mount=False)
    assert problem == f"cannot create {tmp_path / 'file' / 'videos'}: Not a directory"


def test_a_directory_removed_and_created_again_has_a_new_identity(tmp_path: Path) -> None:
    directory = tmp_path / "videos"
    directory.mkdir()
    before = directory_identity(directory)
    directory.rmdir()
    assert directory_identity(directory) is None
    (tmp_path / "other").mkdir()  # take the freed inode number elsewhere
    directory.mkdir()
    assert directory_identity(directory) not in (None, before)


def test_require_mount_refuses_an_empty_mount_point_and_creates_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "disk"
    mount.mkdir()
    save_dir = mount / "videos"
    problem = save_dir_problem(save_dir, require_mount=True)
    if mount_point_of(tmp_path) is None:  # as here and on CI: the temp dir is on the root filesystem
        assert problem is not None and "is not on a mounted filesystem" in problem
        assert not save_dir.exists()
    else:  # the temp dir is itself on a mounted filesystem (e.g. a tmpfs /tmp), which satisfies require_mount
        assert problem is None
        save_dir.rmdir()
    with small_filesystem(mount, 1 << 20):
        assert mount_point_of(save_dir) == mount
        assert save_dir_problem(save_dir, require_mount=True) is None and save_dir.is_dir()
        remount(mount, "ro")
        assert save_dir_problem(save_dir, require_mount=True) == f"{save_dir} is on a read-only filesystem"
    assert not save_dir.exists()


def test_a_save_directory_outage_is_said_once_and_its_end_once(tmp_path: Path) -> None:
    blocker = tmp_path / "disk"
    blocker.write_text("")
    gauge: list[bool] = []
    calls: list[str] = []
    directory = SaveDirectory(
        blocker / "videos",
        require_mount=False,
        log=structlog.get_logger(),
        gauge=gauge.append,
        on_usable=lambda: calls.append("usable"),
        on_lost=lambda: calls.append("lost"),
        backoff=Backoff(0.0, 0.0),
    )
    with capture_logs() as logs:
        assert not directory.usable() and not directory.usable()
        assert directory.failed_checks == 2 and gauge == [False, False]
        blocker.unlink()
        assert directory.usable() and directory.usable()  # the second call only stats the directory
        shutil.rmtree(blocker)
        assert directory.usable()  # removed: created again at once
    assert [entry["event"] for entry in logs] == ["save_dir_unusable", "save_dir_usable", "save_dir_changed"]
    assert calls == ["usable", "lost", "usable"] and gauge[-1] is True
