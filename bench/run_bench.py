"""CPU, memory, drops and latency of the msightd pipeline against an ffmpeg floor (issue 6): the entry point.

Run ``python -m bench.run_bench --help`` from the repository root. What it does, in one run:

1. starts one real loopback RTSP camera per ``--cameras`` (:mod:`bench.cameras`), a private ``redis-server`` on a
   unix socket (the broker), and ``msightd run`` on a generated TOML: one rtsp node per camera, one aggregator,
   one dumper, with the seed settings (10 fps, 100-frame segments, h264 veryfast crf 23) (:mod:`bench.pipeline`);
2. samples every process from ``/proc`` (:mod:`bench.sampling`) while the pipeline runs for ``--duration``
   seconds, then stops the daemon with SIGTERM (it flushes its partial buffers) and compares the frame ids the
   cameras published with the frame ids in the written segments' JSON files (:mod:`bench.results`, whose
   docstring says how CPU per frame and dropped frames are counted);
3. runs the floor after it (never concurrently: both would fight for the same cores): one ``ffmpeg`` per camera
   reading the same stream and writing the same 100-frame segments with the same codec, preset and crf
   (:mod:`bench.floor`);
4. prints a table and writes JSON (``--json``, default ``bench/results/latest.json``) (:mod:`bench.report`).

``--repeat N`` runs N pipeline + floor pairs: this machine's run-to-run noise (~+-1.5 ms per side) is then
visible rather than hidden in one ratio. This module only parses arguments, checks what the system lacks and
runs the pairs; each step lives in its own module so that none has to be read to change another.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from bench import REPO_ROOT
from bench.cameras import cameras, clip_info, resolve_clips, restart_cameras
from bench.figures import rounded
from bench.floor import FFMPEG, run_floor
from bench.pipeline import PERCEPTION_TOPIC, run_pipeline
from bench.processes import BenchError
from bench.report import environment, format_pairs, format_table, settings_of, summarise_pairs
from bench.results import pipeline_results
from msightd.media.formats import RtspReader
from testbed.rtsp import rtsp_server_available

DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "latest.json"
EXIT_MISSING = 3
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_bench",
        description="Benchmark the msightd pipeline (RTSP -> Redis -> aggregator -> dumper) under the daemon "
        "against an ffmpeg floor doing the same segments. Needs redis-server, /usr/bin/python3 with the "
        "GStreamer RTSP server, and /usr/bin/ffmpeg (unless --skip-floor).",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds each run lasts (default 60)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds excluded at the start (default 5)")
    parser.add_argument("--cameras", type=int, default=1, help="RTSP cameras, each its own server (default 1)")
    parser.add_argument("--transport", choices=("stream", "pubsub"), default="stream", help="default stream")
    parser.add_argument(
        "--frame-encoding",
        choices=("jpeg", "raw", "shm", "packets"),
        default="jpeg",
        help="default jpeg; packets: passthrough recording (no decode, no encode), against an ffmpeg -c copy floor",
    )
    parser.add_argument(
        "--packet-topic",
        action="store_true",
        help="perception + recording from one connection: camera nodes decode and publish --frame-encoding frames "
        f"to {PERCEPTION_TOPIC} (nobody reads it) and their packets to the aggregator; ffmpeg -c copy floor",
    )
    parser.add_argument(
        "--record-in-camera",
        action="store_true",
        help="with --frame-encoding packets: camera nodes store the segments themselves (record_dir) and the dumper "
        "catalogues them from their notices; no aggregator",
    )
    parser.add_argument("--preset", default="veryfast", help="x264 preset, pipeline and floor (default veryfast)")
    parser.add_argument("--crf", type=int, default=23, help="x264 crf, pipeline and floor (default 23)")
    parser.add_argument("--decoder", choices=("opencv", "pyav"), default="pyav", help="rtsp node decoder")
    parser.add_argument(
        "--rtsp-reader",
        choices=get_args(RtspReader),
        default="msightd",
        help="who reads the cameras' packets with --frame-encoding packets (default msightd's own client)",
    )
    parser.add_argument("--decode-threads", type=int, default=1, help="rtsp node decoding threads (default 1)")
    parser.add_argument("--encoder-threads", type=int, default=1, help="x264 threads per sensor (default 1; 0: auto)")
    parser.add_argument(
        "--frame-ids",
        action="store_true",
        help="log every frame id (debug level) to name dropped frames; costs the camera nodes ~0.3 ms/frame",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="pipeline + floor pairs to run (default 1); with more, every pair's ratio and the median are "
        "reported, and the median pair is the result (run-to-run noise here is ~+-1.5 ms per side)",
    )
    parser.add_argument(
        "--broker-persistence",
        choices=("aof", "none"),
        default="aof",
        help="the broker's append-only file, as the daemon's embedded broker (default aof)",
    )
    parser.add_argument(
        "--batch-wait", type=float, default=0.25, help="aggregator batch_wait_s: seconds frames gather per read"
    )
    parser.add_argument("--buffer-size", type=int, default=100, help="frames per segment (default 100)")
    parser.add_argument("--fps", type=float, default=10.0, help="aggregator fps (the clips are 10 fps)")
    parser.add_argument(
        "--clip",
        action="append",
        type=Path,
        help="H.264 MP4 a camera loops (repeat to alternate); default: the mcity clips in ../shared/data "
        "beside the repository, else a generated 1280x960 clip",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    parser.add_argument("--skip-floor", action="store_true", help="do not run the ffmpeg floor")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (segments, logs, config)")
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.duration <= 0 or args.cameras < 1 or args.buffer_size < 1 or args.warmup < 0 or args.repeat < 1:
        parser.error("--duration and --buffer-size must be positive, --cameras and --repeat >= 1, --warmup >= 0")
    if args.record_in_camera and (args.frame_encoding != "packets" or args.packet_topic):
        parser.error("--record-in-camera stores the camera's packets: give --frame-encoding packets, no --packet-topic")
    if args.packet_topic and args.frame_encoding == "packets":
        parser.error("--packet-topic decodes frames beside the packets: give a --frame-encoding other than packets")
    args.warmup = min(args.warmup, args.duration / 2)


def missing_requirements(skip_floor: bool) -> list[str]:
    """Everything the run needs from the system, checked before anything starts."""
    problems = []
    if shutil.which("redis-server") is None:
        problems.append("redis-server is not installed (apt install redis-server)")
    reason = rtsp_server_available()
    if reason is not None:
        problems.append(f"the GStreamer RTSP test server cannot run with /usr/bin/python3: {reason}")
    if not skip_floor and not os.access(FFMPEG, os.X_OK):
        problems.append(f"{FFMPEG} is missing (apt install ffmpeg), or pass --skip-floor")
    try:
        import msightd  # noqa: F401
    except ImportError:
        problems.append(f"msightd is not importable by {sys.executable}: pip install -e . first")
    return problems


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One pipeline + floor pair on the same cameras, as the JSON records it."""
    clips = resolve_clips(args.clip, work)
    with cameras(clips, args.cameras) as servers:
        urls = [server.url for server in servers]
        print(f"run_bench: pipeline, {args.cameras} camera(s), {args.duration:g} s ...", file=sys.stderr)
        pipeline = pipeline_results(run_pipeline(args, urls, work), args.buffer_size)
        floor = None
        if not args.skip_floor:
            print(f"run_bench: ffmpeg floor, {args.duration:g} s ...", file=sys.stderr)
            restart_cameras(servers)
            floor = run_floor(args, urls, work)
    total, floor_cost = pipeline["total_cpu_s_per_frame"], floor and floor["cpu_s_per_frame"]
    return {
        "settings": settings_of(args),
        "environment": environment(),
        "clips": [clip_info(clip) for clip in clips],
        "pipeline": pipeline,
        "floor": floor,
        "ratio_total_to_floor": rounded(total / floor_cost, 2) if total and floor_cost else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """0 with a report; ``EXIT_MISSING`` before starting anything if the system lacks a tool; ``EXIT_FAILED``
    if a run failed, its work directory (logs, config, segments) kept to see why."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    problems = missing_requirements(args.skip_floor)
    if problems:
        for problem in problems:
            print(f"run_bench: missing: {problem}", file=sys.stderr)
        return EXIT_MISSING
    work = Path(tempfile.mkdtemp(prefix="msightd-bench-"))
    results = []
    try:
        for index in range(args.repeat):
            if args.repeat > 1:
                print(f"run_bench: pair {index + 1} of {args.repeat}", file=sys.stderr)
            pair_work = work / f"pair{index + 1}" if args.repeat > 1 else work
            pair_work.mkdir(exist_ok=True)
            results.append(run(args, pair_work))
    except (BenchError, RuntimeError, TimeoutError, OSError) as exc:
        print(f"run_bench: failed: {exc}\n(work directory kept: {work})", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        shutil.rmtree(work, ignore_errors=True)
        return 130
    result = summarise_pairs(results)
    print(format_table(result))
    if "pairs" in result:
        print(format_pairs(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {args.json}" + (f"; work directory kept: {work}" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
