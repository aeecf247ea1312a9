"""A small, fast recording pipeline for storage tests: a looping file camera of incompressible noise (so
segments are big for their cost: ~160 kB per 10 frames at 160x120), an aggregator and a dumper on stream
topics (segments that cannot be written wait in the broker), each a real launch command."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from testbed.waiting import wait_for
from tests.integration.pipeline import launch
from tests.support.processes import Proc, command

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
    processes: list[Proc],
    tmp_path: Path,
    url: str,
    clip: Path | str,
    dumper: Proc,
    sensor: str = "cam",
    fps: int = FPS,
    preset: str = "ultrafast",
) -> tuple[Proc, Proc]:
    """Aggregator and camera (``clip``: a file, looped, or an rtsp:// URL), once ``dumper`` is ready (so no
    segment is published before it listens). ``preset`` veryfast gives B-frames, as shipped."""
    aggregator = launch(
        processes,
        tmp_path,
        "aggregator",
        ["msight_launch_image_to_video_aggregator", "-n", "agg", "-st", "frames", "-pt", "segs",
         "--fps", str(fps), "--buffer-size", str(BUFFER), "--preset", preset, "--batch-wait", "0",
         "--transport", "stream"],
        url,
    )  # fmt: skip
    wait_for(lambda: dumper.has_event("node_ready") and aggregator.has_event("node_ready"), 60, "the consumers")
    looping = [] if str(clip).startswith("rtsp://") else ["--loop"]
    camera = launch(
        processes,
        tmp_path,
        "camera",
        ["msight_launch_rtsp", "-n", "camera", "-u", str(clip), *looping, "-pt", "frames", "--sensor-name", sensor,
         "--transport", "stream"],
        url,
    )  # fmt: skip
    return aggregator, camera


def written(dumper: Proc) -> int:
    return len(dumper.has_event("segment_written"))


def stop_all(processes: list[Proc]) -> None:
    """Camera first, then aggregator, then dumper (each drains what is in flight), as the daemon does."""
    for proc in reversed(processes):
        assert proc.terminate() == 0, proc.text()[-2000:]


def segments_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``msightd segments ...`` as a real process."""
    return subprocess.run([command("msightd"), "segments", *args], capture_output=True, text=True, timeout=120)


def listing(save_dir: Path) -> list[dict[str, Any]]:
    """``msightd segments list --json``."""
    result = segments_cli("list", "--save-dir", str(save_dir), "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows
