"""A small, fast recording pipeline for storage tests: a looping file camera of incompressible noise (so
segments are big for their cost: ~160 kB per 10 frames at 160x120), an aggregator and a dumper on stream
topics (segments that cannot be written wait in the broker), each a real launch command."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from testbed.waiting import wait_for
from tests.integration.pipeline import launch
from tests.support.processes import Proc

FPS = 40
BUFFER = 10
WIDTH, HEIGHT = 160, 120


def noise_clip(path: Path, frames: int = 2 * FPS) -> Path:
    """An H.264 clip of random pixels at :data:`FPS`, nearly lossless so the noise survives decoding."""
    if path.exists():
        return path
    rng = np.random.default_rng(7)
    with av.open(str(path), mode="w") as container:
        stream: Any = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10", "g": str(FPS)}
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), "bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def start_dumper(
    processes: list[Proc], tmp_path: Path, url: str, save_dir: Path, *flags: str, name: str = "dumper"
) -> Proc:
    return launch(
        processes,
        tmp_path,
        name,
        ["msight_launch_video_local_dumper", "-n", "dumper", "-st", "segs", "--save-dir", str(save_dir),
         "--transport", "stream", *flags],
        url,
    )  # fmt: skip


def start_recorder(
    processes: list[Proc], tmp_path: Path, url: str, clip: Path, dumper: Proc, sensor: str = "cam"
) -> tuple[Proc, Proc]:
    """Aggregator and camera, once ``dumper`` is ready (so no segment is published before it listens)."""
    aggregator = launch(
        processes,
        tmp_path,
        "aggregator",
        ["msight_launch_image_to_video_aggregator", "-n", "agg", "-st", "frames", "-pt", "segs",
         "--fps", str(FPS), "--buffer-size", str(BUFFER), "--preset", "ultrafast", "--batch-wait", "0",
         "--transport", "stream"],
        url,
    )  # fmt: skip
    wait_for(lambda: dumper.has_event("node_ready") and aggregator.has_event("node_ready"), 60, "the consumers")
    camera = launch(
        processes,
        tmp_path,
        "camera",
        ["msight_launch_rtsp", "-n", "camera", "-u", str(clip), "--loop", "-pt", "frames", "--sensor-name", sensor,
         "--transport", "stream"],
        url,
    )  # fmt: skip
    return aggregator, camera


def written(dumper: Proc) -> int:
    return len(dumper.has_event("segment_written"))
