"""Helpers shared by the uploader tests: segment pairs in a save dir, the uploader as a real process, and
what the bucket and the catalog hold."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from msightd.storage.catalog import SegmentCatalog, SegmentRecord, record_from_metadata
from testbed.ports import free_port
from tests.support.processes import Proc, command
from tests.support.seaweedfs import SeaweedS3
from tests.support.segments import write_segment

DEVICE = "edge-1"
BUCKET = "segments"
#: 2025-12-01T12:00:00Z
T0 = 1764590400.0


def write_pairs(
    save_dir: Path, count: int, start: float = T0, video_bytes: int = 40_000, frames: int = 10, every_s: float = 10.0
) -> list[SegmentRecord]:
    """``count`` pairs of ``frames`` frames at 10 fps, starting ``every_s`` apart, as a dumper writes them (files,
    then the catalog row). The MP4s are random bytes: the uploader never looks inside them, and random bytes
    make every object different."""
    save_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with SegmentCatalog(save_dir) as catalog:
        for index in range(count):
            written = write_segment(
                save_dir, "cam_1", start + every_s * index, frame_count=frames, video=os.urandom(video_bytes)
            )
            record = record_from_metadata(written.metadata_path)
            catalog.add(record)
            records.append(record)
    return records


def start_uploader(
    processes: list[Proc],
    tmp_path: Path,
    store: SeaweedS3,
    save_dir: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    bucket: str = BUCKET,
    name: str = "uploader",
) -> Proc:
    """``msight_launch_aws_video_pusher`` uploading ``save_dir``; also serves metrics (``proc.metrics_port``)."""
    metrics_port = free_port()
    proc = Proc(
        [
            command("msight_launch_aws_video_pusher"),
            "-n",
            name,
            "--save-dir",
            str(save_dir),
            "--bucket-name",
            bucket,
            "--endpoint-url",
            store.endpoint_url,
            "--log-format",
            "json",
            "--metrics-port",
            str(metrics_port),
            *flags,
        ],
        tmp_path / f"{name}.log",
        env={**store.credentials_env(), "MSIGHT_EDGE_DEVICE_NAME": DEVICE, **(env or {})},
    )
    proc.metrics_port = metrics_port  # type: ignore[attr-defined]
    processes.append(proc)
    return proc


def backlog(save_dir: Path) -> int:
    with SegmentCatalog(save_dir) as catalog:
        return catalog.upload_backlog()[0]


def catalog_records(save_dir: Path) -> list[SegmentRecord]:
    with SegmentCatalog(save_dir) as catalog:
        return catalog.segments()


def metric(proc: Proc, name: str, labels: str = "") -> float:
    """A sample from the process's /metrics (0 when the series does not exist yet)."""
    port = proc.metrics_port  # type: ignore[attr-defined]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
