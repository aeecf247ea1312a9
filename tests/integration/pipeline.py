"""Helpers shared by the pipeline integration tests: start the three launch commands, read results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testbed.waiting import wait_for
from tests.support.processes import Proc, command


def launch(
    processes: list[Proc], tmp_path: Path, name: str, args: list[str], redis_url: str, env: dict[str, str] | None = None
) -> Proc:
    proc = Proc(
        [command(args[0]), *args[1:], "--log-format", "json"],
        tmp_path / f"{name}.log",
        env={"MSIGHT_REDIS_URL": redis_url, "MSIGHT_EDGE_DEVICE_NAME": "test-edge", **(env or {})},
        cwd=tmp_path,
    )
    processes.append(proc)
    return proc


def segments_on_disk(save_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(mp4 path, parsed JSON) for every complete segment, in capture order."""
    if not save_dir.exists():
        return []
    found = []
    for metadata_path in sorted(save_dir.glob("*.json")):
        video_path = metadata_path.with_suffix(".mp4")
        found.append((video_path, json.loads(metadata_path.read_text())))
    return sorted(found, key=lambda item: item[1]["first_capture_timestamp"])


def start_consumers(
    processes: list[Proc], tmp_path: Path, url: str, buffer: int, overlap: int, extra_args: tuple[str, ...] = ()
) -> tuple[Proc, Proc]:
    """The tutorial's dumper and aggregator (MSight's flags, plus ``extra_args`` for both), started and
    subscribed."""
    dumper = launch(
        processes,
        tmp_path,
        "dumper",
        [
            "msight_launch_video_local_dumper",
            "-n",
            "video_dumper",
            "-st",
            "aggregated_video",
            "--save-dir",
            "./received_videos",
            *extra_args,
        ],
        url,
    )
    aggregator = launch(
        processes,
        tmp_path,
        "aggregator",
        [
            "msight_launch_image_to_video_aggregator",
            "-n",
            "image_aggregator",
            "-st",
            "rtsp_images",
            "-pt",
            "aggregated_video",
            "--fps",
            "10",
            "--buffer-size",
            str(buffer),
            "--overlap-size",
            str(overlap),
            *extra_args,
        ],
        url,
    )
    # node_ready comes after the first read through the subscription (the *_started lines come before it)
    wait_for(
        lambda: dumper.has_event("node_ready") and aggregator.has_event("node_ready"),
        30,
        "dumper and aggregator to subscribe",
    )
    return dumper, aggregator
