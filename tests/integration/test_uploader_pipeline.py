"""End to end as MSight's tutorial runs it: camera -> aggregator -> msight_launch_aws_video_pusher, into a real
S3-compatible store, with the segments spooled on disk in between."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from testbed.waiting import wait_for
from tests.integration.daemon import pipeline_toml, running_daemon
from tests.integration.pipeline import launch
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint
from tests.support.seaweedfs import UPLOADER_KEY, UPLOADER_SECRET, SeaweedS3
from tests.support.video import probe_video

MSIGHT_KEY = re.compile(r"^tutorial/test-edge/test_camera/\d{4}-\d{2}-\d{2}/\d{2}/(\d{10})_(\d{10})\.(mp4|json)$")


def test_camera_to_bucket_through_the_spool(
    redis_server: RedisEndpoint, s3_store: SeaweedS3, sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    url = redis_server.url
    spool = tmp_path / "spool"
    pusher = launch(
        processes,
        tmp_path,
        "pusher",
        [
            "msight_launch_aws_video_pusher",
            "-n",
            "video_pusher",
            "-st",
            "aggregated_video",
            "--bucket-name",
            "segments",
            "--prefix",
            "tutorial",
            "--endpoint-url",
            s3_store.endpoint_url,
            "--spool-dir",
            str(spool),
        ],
        url,
        env=s3_store.credentials_env(),
    )
    aggregator = launch(
        processes,
        tmp_path,
        "aggregator",
        ["msight_launch_image_to_video_aggregator", "-n", "agg", "-st", "images", "-pt", "aggregated_video",
         "--buffer-size", "20"],
        url,
    )  # fmt: skip
    wait_for(
        lambda: pusher.has_event("dumper_started") and aggregator.has_event("aggregator_started"), 30, "subscribers"
    )
    launch(
        processes,
        tmp_path,
        "rtsp",
        ["msight_launch_rtsp", "-n", "cam", "-u", str(sample_video), "-pt", "images", "--sensor-name", "test_camera"],
        url,
    )  # 60 frames: three segments of 20

    def uploaded() -> dict[str, tuple[int, str]]:
        objects = s3_store.objects("segments")
        return objects if len(objects) == 6 else {}

    objects = wait_for(uploaded, 60, "three segments in the bucket")
    assert all(MSIGHT_KEY.match(key) for key in objects), sorted(objects)
    client = s3_store.client()
    frame_ids: list[int] = []
    for key in sorted(k for k in objects if k.endswith(".mp4")):
        video = client.get_object(Bucket="segments", Key=key)["Body"].read()
        info = probe_video(video)
        assert (info.frame_count, info.width, info.height, info.codec) == (20, 640, 480, "h264")
        message = json.loads(client.get_object(Bucket="segments", Key=key[:-4] + ".json")["Body"].read())
        assert message["sensor_name"] == "test_camera" and len(message["frame_ids"]) == 20
        first, last = MSIGHT_KEY.match(key).groups()[:2]  # type: ignore[union-attr]
        assert (int(first), int(last)) == (
            int(message["capture_timestamps"][0]),
            int(message["capture_timestamps"][-1]),
        )
        frame_ids += message["frame_ids"]
    assert len(set(frame_ids)) == 60, "every frame in exactly one uploaded segment"
    wait_for(lambda: not list(spool.glob("*.mp4")) and not list(spool.glob("*.json")), 10, "the spool emptied")
    assert pusher.terminate() == 0


def test_daemon_uploads_what_its_dumper_writes(
    s3_store: SeaweedS3, sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    """Under ``msightd run``: the uploader reads the dumper's save dir (credentials as config keys here),
    deletes each pair once verified, and its metrics reach the daemon's /metrics."""

    def config(save_dir: Path, port: int) -> str:
        uploader = f"""
[[nodes]]
name = "uploader"
kind = "video_s3_uploader"
save_dir = "{save_dir}"
bucket_name = "segments"
endpoint_url = "{s3_store.endpoint_url}"
aws_access_key_id = "{UPLOADER_KEY}"
aws_secret_access_key = "{UPLOADER_SECRET}"
delete_after_upload = true
"""
        return pipeline_toml(sample_video, save_dir, port, buffer_size=10, extra=uploader)

    with running_daemon(config, tmp_path, processes) as daemon:
        wait_for(lambda: len(s3_store.objects("segments")) >= 6, 60, "three pairs in the bucket")
        keys = sorted(s3_store.objects("segments"))
        assert all(key.startswith("test-edge/test_camera/") for key in keys), keys  # utc layout, the default
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=5).read()
        assert b'msightd_uploads_total{node="uploader",result="uploaded"}' in metrics
        uploaded = {key.rsplit("/", 1)[1] for key in keys if key.endswith(".mp4")}
        assert not uploaded & {path.name for path in (tmp_path / "videos").glob("*.mp4")}, "deleted once uploaded"
        assert not [p for p in daemon.status()["health"]["problems"] if p["node"] == "uploader"]
