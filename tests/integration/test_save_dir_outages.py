"""A save directory that is not usable (at start, read-only, removed, not mounted) is an outage the dumper waits
out: it stays up, keeps segments unacknowledged, says so once, counts refused and failed writes
(``msightd_write_errors_total``), shows what waits (``msightd_pending_segments``) and writes everything as soon
as the directory is usable. Real launch commands, real filesystems; every frame the camera published is in a
written segment at the end."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

from testbed.ports import free_port
from testbed.waiting import wait_for
from tests.integration.recorder import listing, noise_clip, start_dumper, start_recorder, stop_all, written
from tests.integration.test_observability import scrape, total
from tests.support.filesystems import fail_filesystem, small_filesystem
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint

DISK_BYTES = 64 << 20


def metric(port: int, name: str) -> float:
    try:
        return total(scrape(port), name)
    except OSError:
        return 0.0


def remove_while_written(directory: Path) -> None:
    """``rm -rf`` a directory a dumper is writing into: its temp files come and go meanwhile (one listed
    and then gone, or one created after the listing), which is the race under test, not a failure of it."""

    def gone_is_fine(_function: object, _path: str, exc_info: tuple[type, BaseException, object]) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    for _attempt in range(20):
        try:
            shutil.rmtree(directory, onerror=gone_is_fine)
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
    raise AssertionError(f"{directory} kept refilling while being removed")


def frames_accounted_for(dumper: Proc, camera: Proc) -> None:
    """After :func:`stop_all`: every frame the camera published was written in some segment, once."""
    published = camera.has_event("source_stopped")[0]["frames_published"]
    assert sum(event["frames"] for event in dumper.has_event("segment_written")) == published


def test_a_save_dir_unusable_at_start_is_waited_for_and_nothing_is_lost(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    blocker = tmp_path / "disk"
    blocker.write_text("a file where the directory will be")
    save_dir, port = blocker / "videos", free_port()
    dumper = start_dumper(processes, tmp_path, redis_server.url, save_dir, "--metrics-port", str(port))
    _, camera = start_recorder(processes, tmp_path, redis_server.url, noise_clip(tmp_path / "noise.mp4"), dumper)
    wait_for(lambda: metric(port, "msightd_pending_segments") >= 3, 60, "segments waiting")
    wait_for(lambda: metric(port, "msightd_write_errors_total") >= 1, 30, "a refused write to be counted")
    assert dumper.process.poll() is None, "the dumper runs on"
    assert metric(port, "msightd_save_dir_usable") == 0
    said = dumper.has_event("save_dir_unusable")
    assert len(said) == 1 and said[0]["problem"] == f"cannot create {save_dir}: Not a directory"
    blocker.unlink()  # the disk arrives
    wait_for(lambda: dumper.has_event("save_dir_usable"), 30, "the directory to be noticed")
    wait_for(lambda: metric(port, "msightd_pending_segments") == 0, 30, "the waiting segments to be written")
    assert metric(port, "msightd_save_dir_usable") == 1
    stop_all(processes)
    frames_accounted_for(dumper, camera)
    assert len(listing(save_dir)) == written(dumper)


def test_a_disk_turned_read_only_by_an_error_is_let_go_and_written_again_once_mounted_again(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    """An ext4 with ``errors=remount-ro`` hits an error: writes fail with EROFS while its mount flags still
    say read-write. The dumper must notice, keep segments, and hold no file open on it (so that it can be
    unmounted, checked and mounted again), then write again."""
    port, image, mount_point = free_port(), tmp_path / "disk.img", tmp_path / "disk"
    save_dir = mount_point / "videos"
    with small_filesystem(mount_point, DISK_BYTES, kind="ext4", image=image):
        dumper = start_dumper(processes, tmp_path, redis_server.url, save_dir, "--metrics-port", str(port))
        _, camera = start_recorder(processes, tmp_path, redis_server.url, noise_clip(tmp_path / "noise.mp4"), dumper)
        wait_for(lambda: written(dumper) >= 3, 60, "segments before the failure")
        fail_filesystem(mount_point)
        wait_for(lambda: metric(port, "msightd_pending_segments") >= 3, 60, "segments waiting")
        assert metric(port, "msightd_write_errors_total") >= 1 and metric(port, "msightd_save_dir_usable") == 0
        failed = dumper.has_event("segment_write_failed")
        assert len(failed) == 1 and "Read-only file system" in failed[0]["msg"], "one line per outage"
        assert (
            dumper.has_event("save_dir_unusable")[0]["problem"] == f"cannot write in {save_dir}: Read-only file system"
        )
        wait_for(lambda: subprocess.run(["umount", str(mount_point)]).returncode == 0, 30, "the dumper to let go")
    with small_filesystem(mount_point, DISK_BYTES, kind="ext4", image=image):  # checked and mounted again
        wait_for(lambda: dumper.has_event("save_dir_usable"), 30, "the disk to be noticed again")
        wait_for(lambda: metric(port, "msightd_pending_segments") == 0, 30, "the waiting segments to be written")
        stop_all(processes)
        frames_accounted_for(dumper, camera)
        files = {path.name for path in save_dir.glob("*.mp4")}
        assert {event["file"] for event in dumper.has_event("segment_written")} == files, "fsynced: none lost"
        assert len(listing(save_dir)) == len(files), "the catalog caught up with the files"


def test_a_save_dir_removed_while_running_is_created_again_with_its_catalog(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    save_dir, port = tmp_path / "videos", free_port()
    dumper = start_dumper(processes, tmp_path, redis_server.url, save_dir, "--metrics-port", str(port))
    _, camera = start_recorder(processes, tmp_path, redis_server.url, noise_clip(tmp_path / "noise.mp4"), dumper)
    wait_for(lambda: written(dumper) >= 3, 60, "segments before the removal")
    remove_while_written(save_dir)
    removed_after = written(dumper)
    wait_for(lambda: written(dumper) >= removed_after + 3, 60, "segments after the removal")
    wait_for(lambda: metric(port, "msightd_pending_segments") == 0, 30, "nothing waiting")
    # a write racing the removal may fail once (it is then retried into the new directory)
    assert metric(port, "msightd_write_errors_total") <= 1
    stop_all(processes)
    assert dumper.has_event("save_dir_changed"), "the removal was noticed"
    frames_accounted_for(dumper, camera)
    assert len(dumper.has_event("catalog_rebuilt")) == 2, "a new catalog for the new directory"
    files = sorted(path.name for path in save_dir.glob("*.mp4"))
    assert [row["video_file"] for row in listing(save_dir)] == files
    later = [event["file"] for event in dumper.has_event("segment_written")[removed_after + 1 :]]
    assert set(later) <= set(files), "every segment written after the removal is in the new directory"


def test_require_mount_waits_for_a_late_disk_and_refuses_an_empty_mount_point(
    redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    mount_point, port = tmp_path / "disk", free_port()
    mount_point.mkdir()
    save_dir = mount_point / "videos"
    dumper = start_dumper(
        processes, tmp_path, redis_server.url, save_dir, "--require-mount", "--metrics-port", str(port)
    )
    _, camera = start_recorder(processes, tmp_path, redis_server.url, noise_clip(tmp_path / "noise.mp4"), dumper)
    wait_for(lambda: metric(port, "msightd_pending_segments") >= 2, 60, "segments waiting for the disk")
    assert "is not on a mounted filesystem" in dumper.has_event("save_dir_unusable")[0]["problem"]
    assert not save_dir.exists(), "nothing written on the root filesystem"
    with small_filesystem(mount_point, DISK_BYTES):
        wait_for(lambda: metric(port, "msightd_pending_segments") == 0, 30, "the late disk to be written")
        before_pull = written(dumper)
        errors_before_pull = metric(port, "msightd_write_errors_total")
        subprocess.run(["umount", "-l", str(mount_point)], check=True)  # the disk is pulled
        wait_for(lambda: metric(port, "msightd_pending_segments") >= 2, 60, "segments waiting again")
        assert metric(port, "msightd_write_errors_total") > errors_before_pull
        assert metric(port, "msightd_save_dir_usable") == 0
        assert not save_dir.exists(), "the empty mount point got nothing"
        with small_filesystem(mount_point, DISK_BYTES):  # plugged back (an empty disk here)
            wait_for(lambda: metric(port, "msightd_pending_segments") == 0, 30, "writes on the disk plugged back")
            stop_all(processes)
            assert written(dumper) > before_pull
            frames_accounted_for(dumper, camera)
            assert len(dumper.has_event("save_dir_unusable")) == 2, "once per outage"
            assert len(listing(save_dir)) == written(dumper) - before_pull
