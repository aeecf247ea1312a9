"""frame_encoding=shm end to end: the launch commands against a real redis-server, frames through a
shared-memory ring, files decoded back and compared with the source, nothing lost when the ring is full
or the consumer starts late."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from msightd.media.frame_ring import HEADER_BYTES
from testbed.waiting import wait_for
from tests.integration.pipeline import launch, segments_on_disk
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint
from tests.support.video import probe_video

BUFFER = 20


def source_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        frames.append(image)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_frames_through_a_full_ring_and_a_late_consumer_all_reach_the_files(
    redis_server: RedisEndpoint, sample_video: Path, tmp_path: Path, processes: list[Proc], decoder: str
) -> None:
    """opencv pictures are BGR, converted into the ring; pyav pictures are YUV, copied into it."""
    url = redis_server.url
    shm_dir = tmp_path / "shm"
    # The camera node starts alone, with a ring smaller than a segment: the first 8 frames wait in the
    # ring for a consumer that has not started, the next ones go inline (JPEG) into the Redis stream.
    source = launch(
        processes,
        tmp_path,
        "rtsp",
        [
            "msight_launch_rtsp", "-n", "rtsp_node", "-u", str(sample_video), "-pt", "rtsp_images",
            "--sensor-name", "cam", "--loop", "--frame-encoding", "shm", "--shm-dir", str(shm_dir),
            "--shm-slots", "8", "--transport", "stream", "--decoder", decoder,
        ],
        url,
    )  # fmt: skip
    wait_for(lambda: len(source.has_event("frame_captured")) >= 15, 60, "15 frames published before any consumer")
    assert source.has_event("frame_sent_inline")[0]["reason"] == "consumer_behind"
    # OpenCV rescales a camera that changes resolution: it says so, once; PyAV follows the change silently
    assert len(source.has_event("decoder_keeps_first_size")) == (1 if decoder == "opencv" else 0)
    dumper = launch(
        processes,
        tmp_path,
        "dumper",
        [
            "msight_launch_video_local_dumper",
            "-n",
            "dumper",
            "-st",
            "videos",
            "--save-dir",
            "./out",
            "--transport",
            "stream",
        ],
        url,
    )
    aggregator = launch(
        processes,
        tmp_path,
        "aggregator",
        [
            "msight_launch_image_to_video_aggregator", "-n", "aggregator", "-st", "rtsp_images", "-pt", "videos",
            "--fps", "10", "--buffer-size", str(BUFFER), "--shm-dir", str(shm_dir), "--transport", "stream",
        ],
        url,
    )  # fmt: skip
    save_dir = tmp_path / "out"
    wait_for(lambda: len(segments_on_disk(save_dir)) >= 4, 90, "four segments on disk")
    assert source.terminate() == 0
    published = [e["frame_id"] for e in source.has_event("frame_captured")]
    assert aggregator.terminate() == 0
    wait_for(
        lambda: sum(len(m["frames"]) for _, m in segments_on_disk(save_dir)) >= len(published) or None,
        30,
        "every published frame in a file",
    )
    assert dumper.terminate() == 0

    rings = list(shm_dir.glob("*.ring"))
    assert len(rings) == 1
    last_seq = int(np.frombuffer(rings[0].read_bytes()[:HEADER_BYTES], dtype="<u8")[6])
    assert last_seq > 8 * 3, "once the aggregator ran, frames went through the ring again and again"
    assert not aggregator.has_event("frame_lost")

    originals = source_frames(sample_video)
    in_files: list[int] = []
    for video_path, meta in segments_on_disk(save_dir):
        info = probe_video(video_path, keep_frames=True)
        assert info.frame_count == len(meta["frames"]) and (info.width, info.height) == (640, 480)
        assert info.frames is not None
        for frame_meta, decoded in zip(meta["frames"], info.frames, strict=True):
            index = published.index(frame_meta["frame_id"])
            original = originals[index % len(originals)]
            assert psnr(decoded, original) > 28, f"frame {index} is not the picture the camera sent"
        in_files += [f["frame_id"] for f in meta["frames"]]
    assert in_files == published, "every frame exactly once, in order, ring or inline"
