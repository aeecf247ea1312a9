"""The seed tutorial over a real RTSP server, and camera outages (server gone, server stalled)."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testbed.rtsp import RtspServer
from testbed.waiting import wait_for
from tests.integration.pipeline import launch, segments_on_disk, start_consumers
from tests.support.processes import Proc, command
from tests.support.redis import RedisEndpoint
from tests.support.video import probe_video

SEED_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - test-edge - rtsp_node - INFO :: Got image from test_camera, "
    r"the image shape is \(480, 640, 3\), time: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}"
)


def test_seed_tutorial_commands_over_rtsp(
    redis_server: RedisEndpoint, rtsp_camera: RtspServer, tmp_path: Path, processes: list[Proc]
) -> None:
    url = redis_server.url
    start_consumers(processes, tmp_path, url, buffer=100, overlap=0)
    source = Proc(
        [
            command("msight_launch_rtsp"),
            "-n",
            "rtsp_node",
            "-u",
            rtsp_camera.url,
            "-pt",
            "rtsp_images",
            "--sensor-name",
            "test_camera",
            "--log-format",
            "console",
        ],
        tmp_path / "rtsp.log",
        env={"MSIGHT_REDIS_URL": url, "MSIGHT_EDGE_DEVICE_NAME": "test-edge"},
        cwd=tmp_path,
    )
    processes.append(source)
    save_dir = tmp_path / "received_videos"
    wait_for(lambda: segments_on_disk(save_dir), 120, "the first 100-frame segment")
    assert source.terminate() == 0

    seed_lines = [line for line in source.text().splitlines() if "Got image from" in line]
    assert len(seed_lines) >= 100 and all(SEED_LINE.match(line) for line in seed_lines), seed_lines[:2]

    video, meta = segments_on_disk(save_dir)[0]
    first = datetime.fromtimestamp(meta["first_capture_timestamp"], UTC)
    assert video.name == f"test_camera_{first:%Y%m%d_%H%M%S_%f}.mp4"
    info = probe_video(video, keep_frames=True)
    assert (info.frame_count, info.width, info.height, info.codec, info.pix_fmt) == (100, 640, 480, "h264", "yuv420p")
    assert info.fps == pytest.approx(10.0)
    assert meta["frame_count"] == 100 and meta["fps"] == 10.0 and meta["codec"] == "h264"
    assert (meta["width"], meta["height"], meta["device_name"]) == (640, 480, "test-edge")
    stamps = [f["capture_timestamp"] for f in meta["frames"]]
    assert stamps == sorted(stamps) and meta["last_capture_timestamp"] == stamps[-1]
    assert info.frames is not None and not (info.frames[0] == info.frames[-1]).all(), "a live, moving picture"


#: README: a camera is reopened with backoff 0.25 s doubling to 1 s, "back within ~1.5 s of the camera"; the
#: RTSP server's first frame takes ~0.5-1.4 s more, and a loaded CI machine gets a margin on top.
RECOVERY_S = 10.0


def frames_read(source: Proc) -> int:
    summaries = source.has_event("frame_captured")
    return len(summaries)


@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_camera_outage_is_bridged_and_reported(
    redis_server: RedisEndpoint, rtsp_camera: RtspServer, tmp_path: Path, processes: list[Proc], decoder: str
) -> None:
    source = launch(
        processes,
        tmp_path,
        "rtsp",
        [
            "msight_launch_rtsp", "-n", "rtsp_node", "-u", rtsp_camera.url, "-pt", "rtsp_images",
            "--sensor-name", "cam", "--decoder", decoder,
        ],
        redis_server.url,
    )  # fmt: skip
    wait_for(lambda: frames_read(source) >= 10, 60, "frames from the camera")
    rtsp_camera.stop()
    wait_for(lambda: source.has_event("source_lost"), 5, "the loss to be noticed (a closed connection: at once)")
    wait_for(lambda: len(source.has_event("source_open_failed")) >= 2, 5, "reconnect attempts, each logged")
    time.sleep(2)
    before = frames_read(source)
    rtsp_camera.start()
    back_at = time.monotonic()
    wait_for(lambda: frames_read(source) > before + 5, RECOVERY_S, "frames after the camera came back")
    print(f"frames resumed {time.monotonic() - back_at:.2f} s after the server was listening again")
    gaps = source.has_event("source_gap")
    assert gaps and gaps[0]["gap_seconds"] >= 2, gaps
    assert source.process.poll() is None, "the node never exits because a camera is down"


@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_stalled_camera_is_detected_and_recovered(
    redis_server: RedisEndpoint, rtsp_camera: RtspServer, tmp_path: Path, processes: list[Proc], decoder: str
) -> None:
    source = launch(
        processes,
        tmp_path,
        "rtsp",
        [
            "msight_launch_rtsp",
            "-n",
            "rtsp_node",
            "-u",
            rtsp_camera.url,
            "-pt",
            "rtsp_images",
            "--sensor-name",
            "cam",
            "--read-timeout",
            "1",
            "--decoder",
            decoder,
        ],
        redis_server.url,
    )
    wait_for(lambda: frames_read(source) >= 10, 60, "frames from the camera")
    assert rtsp_camera.pid is not None
    os.kill(rtsp_camera.pid, signal.SIGSTOP)  # connection stays open, no more frames: a stall
    stalled_at = time.monotonic()
    try:
        # README: noticed after the read timeout (here 1 s); FFmpeg may take up to ~3 reads of it, plus a margin
        wait_for(lambda: source.has_event("source_lost"), 3 * 1 + 5, "the stall to be detected")
        print(f"stall noticed after {time.monotonic() - stalled_at:.2f} s")
    finally:
        os.kill(rtsp_camera.pid, signal.SIGCONT)
    before = frames_read(source)
    wait_for(lambda: frames_read(source) > before + 5, RECOVERY_S, "frames after the stall")
    assert source.has_event("source_gap")
