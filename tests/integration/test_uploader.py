"""The uploader as a real process against a real S3-compatible store (SeaweedFS): exactly one verified object
per file, outages, a kill in the middle of a multipart upload, wrong credentials, a missing bucket, MSight's
key layout."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from msightd.storage.catalog import SegmentRecord
from testbed.waiting import wait_for
from tests.integration.uploader import (
    BUCKET,
    DEVICE,
    T0,
    backlog,
    catalog_records,
    metric,
    sha256_file,
    start_uploader,
    write_pairs,
)
from tests.support.processes import Proc
from tests.support.seaweedfs import SeaweedS3


def utc_key(name: str) -> str:
    """Where the utc layout puts a file of the pairs written here (first capture 2025-12-01 12:xx UTC)."""
    return f"{DEVICE}/cam_1/2025/12/01/12/{name}"


def expected_objects(save_dir: Path, records: list[SegmentRecord]) -> dict[str, tuple[int, str]]:
    """The bucket's content when every pair is uploaded once in the utc layout: the catalog's MP4 size and
    SHA-256, and each JSON as on disk."""
    expected = {}
    for record in records:
        expected[utc_key(record.video_file)] = (record.video_size_bytes, record.video_sha256)
        metadata = save_dir / record.metadata_file
        expected[utc_key(record.metadata_file)] = (metadata.stat().st_size, sha256_file(metadata))
    return expected


def test_each_pair_becomes_two_verified_objects_then_leaves_the_disk(
    s3_store: SeaweedS3, tmp_path: Path, processes: list[Proc]
) -> None:
    save_dir = tmp_path / "save"
    records = write_pairs(save_dir, 3)
    expected = expected_objects(save_dir, records)
    proc = start_uploader(processes, tmp_path, s3_store, save_dir, "--key-layout", "utc", "--delete-after-upload")
    wait_for(lambda: not list(save_dir.glob("*.mp4")) and not list(save_dir.glob("*.json")), 30, "pairs uploaded")
    assert s3_store.objects(BUCKET) == expected
    assert catalog_records(save_dir) == []  # deleted pairs leave the catalog too
    assert metric(proc, "msightd_uploads_total", 'result="uploaded"') == 3
    assert metric(proc, "msightd_uploaded_bytes_total") == sum(size for size, _ in expected.values())
    assert proc.terminate() == 0


def test_store_down_for_a_minute_loses_nothing_and_uploads_each_pair_once(
    s3_store: SeaweedS3, tmp_path: Path, processes: list[Proc]
) -> None:
    save_dir = tmp_path / "save"
    records = write_pairs(save_dir, 2)
    proc = start_uploader(processes, tmp_path, s3_store, save_dir, "--key-layout", "utc")
    wait_for(lambda: backlog(save_dir) == 0, 30, "the first pairs uploaded")

    s3_store.stop()
    outage_started = time.monotonic()
    records += write_pairs(save_dir, 3, start=T0 + 100)  # the dumper goes on writing during the outage
    failed = wait_for(lambda: proc.has_event("upload_failed"), 30, "the outage reported")
    assert failed[0]["level"] == "error" and failed[0]["reason"] == "unreachable"
    assert s3_store.endpoint_url in failed[0]["msg"]
    time.sleep(max(0.0, 60 - (time.monotonic() - outage_started)))
    assert proc.process.poll() is None, "the uploader must ride out the outage"
    assert len(proc.has_event("upload_failed")) == 1, "one clear line per outage, not one per retry"
    assert backlog(save_dir) == 3
    assert all((save_dir / r.video_file).exists() and (save_dir / r.metadata_file).exists() for r in records)

    s3_store.start()
    wait_for(lambda: backlog(save_dir) == 0, 60, "the backlog uploaded after the outage")
    assert proc.has_event("uploads_recovered")
    assert s3_store.objects(BUCKET) == expected_objects(save_dir, records)
    assert {r.stem: r.upload_key for r in catalog_records(save_dir)} == {r.stem: utc_key(r.video_file) for r in records}
    assert s3_store.multipart_uploads(BUCKET) == []
    assert metric(proc, "msightd_uploads_total", 'result="uploaded"') == 5
    assert metric(proc, "msightd_uploads_total", 'result="failed"') >= 1
    wait_for(lambda: metric(proc, "msightd_upload_backlog_segments") == 0, 10, "the backlog gauge at 0")
    assert proc.terminate() == 0


def test_a_pair_uploaded_but_not_marked_is_recognised_not_sent_again(
    s3_store: SeaweedS3, tmp_path: Path, processes: list[Proc]
) -> None:
    """A crash between the verified upload and the catalog mark: the next run finds both objects identical."""
    save_dir = tmp_path / "save"
    write_pairs(save_dir, 2)
    first = start_uploader(processes, tmp_path, s3_store, save_dir)
    wait_for(lambda: backlog(save_dir) == 0, 30, "the pairs uploaded")
    assert first.terminate() == 0
    with sqlite3.connect(save_dir / ".msightd" / "catalog.sqlite3") as db:
        db.execute("UPDATE segments SET uploaded_at = NULL, upload_key = NULL")
    before = s3_store.objects(BUCKET)
    again = start_uploader(processes, tmp_path, s3_store, save_dir, name="again")
    wait_for(lambda: backlog(save_dir) == 0, 30, "the pairs marked again")
    assert metric(again, "msightd_uploads_total", 'result="already_present"') == 2
    assert metric(again, "msightd_uploaded_bytes_total") == 0
    assert s3_store.objects(BUCKET) == before
    assert again.terminate() == 0


def test_msight_keys_of_one_second_never_overwrite_another_segment(
    s3_store: SeaweedS3, tmp_path: Path, processes: list[Proc]
) -> None:
    """Two half-second segments share MSight's key (same whole first and last seconds): the second goes
    under the key tagged with its content's hash, whichever of the two concurrent uploads gets there first."""
    save_dir = tmp_path / "save"
    records = write_pairs(save_dir, 2, frames=5, every_s=0.5)  # T0..T0+0.4 and T0+0.5..T0+0.9
    proc = start_uploader(processes, tmp_path, s3_store, save_dir, "--key-layout", "msight", "--concurrency", "2")
    wait_for(lambda: backlog(save_dir) == 0, 30, "both pairs uploaded")
    objects = s3_store.objects(BUCKET)
    videos = {key: value for key, value in objects.items() if key.endswith(".mp4")}
    assert len(objects) == 4 and len(videos) == 2
    assert sorted(videos.values()) == sorted((r.video_size_bytes, r.video_sha256) for r in records)
    tagged = [key for key in videos if not key.endswith("/1764590400_1764590400.mp4")]
    assert len(tagged) == 1 and tagged[0].endswith(f"/1764590400_1764590400-{videos[tagged[0]][1][:8]}.mp4")
    assert len(proc.has_event("upload_key_taken")) == 1
    assert proc.terminate() == 0


def test_killed_during_a_multipart_upload_leaves_no_partial_object_and_completes_after_restart(
    s3_store: SeaweedS3, tmp_path: Path, processes: list[Proc]
) -> None:
    save_dir = tmp_path / "save"
    [record] = write_pairs(save_dir, 1, video_bytes=12 * 1024 * 1024)  # 3 parts of 5 MiB
    video_key = utc_key(record.video_file)
    parts = ("--multipart-threshold", str(5 * 1024 * 1024), "--multipart-part-size", str(5 * 1024 * 1024))
    slow = start_uploader(
        processes, tmp_path, s3_store, save_dir, "--key-layout", "utc", "--max-bandwidth", str(1024 * 1024), *parts
    )
    wait_for(lambda: s3_store.multipart_uploads(BUCKET) == [video_key], 30, "the multipart upload to start")
    time.sleep(1.0)  # part of the first part is on its way
    slow.kill()  # SIGKILL

    assert s3_store.objects(BUCKET) == {}, "nothing may be visible under a final key"
    assert s3_store.multipart_uploads(BUCKET) == [video_key]  # the dead uploader's, incomplete
    assert backlog(save_dir) == 1

    again = start_uploader(processes, tmp_path, s3_store, save_dir, "--key-layout", "utc", *parts, name="again")
    wait_for(lambda: backlog(save_dir) == 0, 60, "the upload to complete after the restart")
    objects = s3_store.objects(BUCKET)
    assert objects[video_key] == (record.video_size_bytes, record.video_sha256)
    assert len(objects) == 2
    assert s3_store.multipart_uploads(BUCKET) == [], "the stale multipart upload was aborted"
    assert again.terminate() == 0


@pytest.mark.parametrize(
    ("secret", "says"),
    [("not-the-secret", "refused the credentials"), ("", "no usable credentials")],
    ids=["wrong", "none"],
)
def test_wrong_credentials_one_clear_line_nothing_deleted_retries_go_on(
    s3_store: SeaweedS3, tmp_path: Path, processes: list[Proc], secret: str, says: str
) -> None:
    save_dir = tmp_path / "save"
    records = write_pairs(save_dir, 2)
    env = s3_store.credentials_env(secret=secret)
    if not secret:  # nothing anywhere: no variables, no files, no instance metadata
        env.update(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    proc = start_uploader(processes, tmp_path, s3_store, save_dir, "--delete-after-upload", env=env)
    [failed] = wait_for(lambda: proc.has_event("upload_failed"), 30, "the refusal reported")
    assert failed["reason"] == "credentials"
    assert says in failed["msg"] and "AWS_SECRET_ACCESS_KEY" in failed["msg"].upper()
    # the two first attempts, then probes one at a time: four failures mean the node kept retrying
    wait_for(lambda: metric(proc, "msightd_uploads_total", 'result="failed"') >= 4, 30, "retries to go on")
    assert proc.process.poll() is None
    assert len(proc.has_event("upload_failed")) == 1
    assert "not-the-secret" not in proc.text() and "uploader-secret" not in proc.text()
    assert all((save_dir / r.video_file).exists() and (save_dir / r.metadata_file).exists() for r in records)
    assert backlog(save_dir) == 2 and s3_store.objects(BUCKET) == {}
    assert proc.terminate() == 0


def test_missing_bucket_one_clear_line_then_uploads_once_it_exists(
    s3_store: SeaweedS3, tmp_path: Path, processes: list[Proc]
) -> None:
    save_dir = tmp_path / "save"
    write_pairs(save_dir, 2)
    proc = start_uploader(processes, tmp_path, s3_store, save_dir, bucket="not-yet-there")
    [failed] = wait_for(lambda: proc.has_event("upload_failed"), 30, "the missing bucket reported")
    assert failed["reason"] == "bucket_missing"
    assert failed["msg"] == (
        f"bucket 'not-yet-there' does not exist at {s3_store.endpoint_url}: create it or fix bucket_name"
    )
    assert backlog(save_dir) == 2
    s3_store.create_bucket("not-yet-there")
    wait_for(lambda: backlog(save_dir) == 0, 60, "uploads once the bucket exists")
    assert len(s3_store.objects("not-yet-there")) == 4
    assert len(proc.has_event("upload_failed")) == 1
    assert proc.terminate() == 0


def test_msight_layout_keys_and_json_match_msights_pusher(
    s3_store: SeaweedS3, tmp_path: Path, processes: list[Proc]
) -> None:
    """MSight's pusher: [prefix/]{device}/{sensor}/{YYYY-MM-DD}/{HH}/{int(first)}_{int(last)}.mp4|.json, the
    hour of the creation time in local time (TZ=EST+5 here: 12:00Z is 07 local), the JSON the message
    without its video."""
    save_dir = tmp_path / "save"
    first = T0 + 0.3  # 10 frames at 10 fps: last capture T0 + 1.2, created at T0 + 1.7 (see write_segment)
    [record] = write_pairs(save_dir, 1, start=first)
    proc = start_uploader(
        processes, tmp_path, s3_store, save_dir, "--prefix", "tutorial/", "--key-layout", "msight", env={"TZ": "EST+5"}
    )
    wait_for(lambda: backlog(save_dir) == 0, 30, "the pair uploaded")
    folder = f"tutorial/{DEVICE}/cam_1/2025-12-01/07"
    objects = s3_store.objects(BUCKET)
    assert sorted(objects) == [f"{folder}/1764590400_1764590401.json", f"{folder}/1764590400_1764590401.mp4"]
    assert objects[f"{folder}/1764590400_1764590401.mp4"] == (record.video_size_bytes, record.video_sha256)
    body = s3_store.client().get_object(Bucket=BUCKET, Key=f"{folder}/1764590400_1764590401.json")["Body"].read()
    message = json.loads(body)
    disk = json.loads((save_dir / record.metadata_file).read_text())
    assert message["data_type"] == "msight_core.data.video.VideoData" and "video" not in message
    assert message["frame_ids"] == [frame["frame_id"] for frame in disk["frames"]]
    assert message["capture_timestamps"] == [frame["capture_timestamp"] for frame in disk["frames"]]
    assert message["creation_timestamp"] == disk["segment_creation_timestamp"]
    assert (save_dir / record.video_file).exists(), "a save dir keeps its files unless delete_after_upload"
    assert proc.terminate() == 0
