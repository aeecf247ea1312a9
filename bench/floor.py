"""The floor: what the same segments cost when plain ffmpeg makes them.

One ``ffmpeg`` per camera reads the same stream and writes the same ``buffer_size``-frame segments with the same
codec, preset and crf (or copies the packets, for passthrough recording), so the pipeline's ratio to it says
what msightd's bus, processes and Python cost on top of the unavoidable decode + encode. It runs after the
pipeline, never beside it: both would fight for the same cores. Debian's ``/usr/bin/ffmpeg`` is used, not the
venv's PyAV libraries, so the floor does not move when msightd's dependencies do.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.figures import per_frame, rounded
from bench.processes import BenchError, sleep_until, start_group, stop_group, tail, wait_until
from bench.sampling import Sampler, window_cpu

FFMPEG = "/usr/bin/ffmpeg"  # Debian's build: the floor must not depend on the venv's PyAV libraries


def ffmpeg_command(url: str, out_dir: Path, args: argparse.Namespace, progress: Path) -> list[str]:
    """Read the camera, encode with the pipeline's codec settings, cut exactly every ``buffer_size`` frames:
    keyframes are forced on those frames and the segment muxer splits on them."""
    max_segments = int(args.duration * args.fps / args.buffer_size) + 20
    split_at = ",".join(str(args.buffer_size * i) for i in range(1, max_segments))
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-rtsp_transport",
        "tcp",
        "-timeout",
        "10000000",  # microseconds: a camera that sends nothing fails the run instead of hanging it
        "-i",
        url,
        "-an",
        *_floor_codec(args),
        "-f",
        "segment",
        "-segment_frames",
        split_at,
        "-reset_timestamps",
        "1",
        "-stats_period",
        "0.1",
        "-progress",
        str(progress),
        str(out_dir / "segment_%05d.mp4"),
    ]


def _floor_codec(args: argparse.Namespace) -> list[str]:
    """The floor does what the pipeline does: copy the camera's packets (segments split at the first
    keyframe at or after each ``buffer_size`` frames, as passthrough segments are), or re-encode."""
    if args.frame_encoding == "packets" or args.packet_topic:
        return ["-c:v", "copy"]
    return [
        "-c:v", "libx264", "-preset", args.preset, "-crf", str(args.crf), "-pix_fmt", "yuv420p",
        "-fps_mode", "passthrough", "-force_key_frames", f"expr:gte(n,n_forced*{args.buffer_size})",
    ]  # fmt: skip


def wait_for_ffmpeg(processes: list[subprocess.Popen[bytes]], progress: list[Path], work: Path) -> None:
    """Until every ffmpeg has encoded a frame; fail naming the camera, with its log, if one exits or stays idle."""
    with contextlib.suppress(BenchError):
        wait_until(
            lambda: all(progress_frames(p) > 0 for p in progress) or any(p.poll() is not None for p in processes),
            60,
            "ffmpeg to encode frames",
        )
    for index, process in enumerate(processes):
        if process.poll() is not None or progress_frames(progress[index]) == 0:
            state = f"exited with {process.returncode}" if process.poll() is not None else "encoded nothing in 60 s"
            raise BenchError(f"ffmpeg of camera {index} {state}:\n{tail(work / f'floor_cam{index}.log')}")


def progress_frames(path: Path) -> int:
    """Frames ffmpeg has encoded so far (last ``frame=`` of its -progress file)."""
    with contextlib.suppress(OSError):
        for line in reversed(path.read_text().splitlines()):
            if line.startswith("frame="):
                return int(line.split("=", 1)[1])
    return 0


def run_floor(args: argparse.Namespace, urls: list[str], work: Path) -> dict[str, Any]:
    """One ffmpeg per camera for ``args.duration`` s; CPU per frame over the same warm-up-excluded window."""
    processes: list[subprocess.Popen[bytes]] = []
    progress = [work / f"floor_cam{i}.progress" for i in range(len(urls))]
    out_dirs = [work / "floor" / f"cam{i}" for i in range(len(urls))]
    try:
        with Sampler() as sampler:
            for index, url in enumerate(urls):
                out_dirs[index].mkdir(parents=True)
                command = ffmpeg_command(url, out_dirs[index], args, progress[index])
                processes.append(start_group(command, work / f"floor_cam{index}.log"))
                sampler.track(f"ffmpeg{index}", processes[-1].pid)
            wait_for_ffmpeg(processes, progress, work)
            started = time.monotonic()
            sleep_until(started + args.warmup)
            frames_t0 = sum(progress_frames(p) for p in progress)
            sampler.mark("t0")
            t0 = time.monotonic()
            sleep_until(started + args.duration)
            frames_t1 = sum(progress_frames(p) for p in progress)
            sampler.mark("t1")
            window_s = time.monotonic() - t0
            for process in processes:
                process.send_signal(signal.SIGINT)  # ffmpeg finishes the open segment on SIGINT
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
            tracked = [sampler.get(label) for label in sampler.labels()]
    finally:
        for process in processes:
            stop_group(process, signal.SIGINT)
    cpu = sum(window_cpu(t, "t0", "t1") or 0.0 for t in tracked)
    sizes = full_segment_sizes(out_dirs, args.buffer_size)
    return {
        "processes": len(processes),
        "window_s": round(window_s, 2),
        **per_frame(cpu, frames_t1 - frames_t0),
        "cores": rounded(cpu / window_s),
        "rss_max_mb": round(max(t.max_rss for t in tracked) / 2**20, 1),
        "full_segments": len(sizes),
        "mb_per_segment": rounded(sum(sizes) / len(sizes) / 1e6 if sizes else None),
        "command": " ".join(ffmpeg_command(urls[0], out_dirs[0], args, progress[0])),
    }


def full_segment_sizes(out_dirs: list[Path], buffer_size: int) -> list[int]:
    """Sizes of the floor's segments holding exactly ``buffer_size`` frames (the last one is partial)."""
    import av

    sizes = []
    for directory in out_dirs:
        for path in sorted(directory.glob("segment_*.mp4")):
            with contextlib.suppress(av.error.FFmpegError), av.open(str(path)) as container:
                if container.streams.video[0].frames == buffer_size:
                    sizes.append(path.stat().st_size)
    return sizes
