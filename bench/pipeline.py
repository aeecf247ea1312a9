"""One pipeline run: a private broker and ``msightd run`` on a generated config, measured, then stopped.

The daemon runs the seed pipeline (one rtsp node per camera, one aggregator, one dumper) exactly as it would in
a deployment, so the bench measures the real supervision, bus and logging paths. This module only observes:
CPU and RSS marks (:mod:`bench.sampling`), ``/metrics`` at the window's ends, the daemon's JSON log, the
segments' JSON files and what the broker holds at the end. :mod:`bench.results` turns that into figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import BenchError, sleep_until, start_group, stop_group, tail, wait_until
from bench.sampling import Sampler, Tracked
from testbed.ports import free_port

FRAME_TOPIC = "rtsp_images"
PERCEPTION_TOPIC = "perception_frames"
SEGMENT_TOPIC = "aggregated_video"
AGGREGATOR = "aggregator"
DUMPER = "dumper"
GRACE_PERIOD_S = 60.0  # generous: the run measures steady state, not how a hurried shutdown loses frames


def rtsp_node_name(index: int) -> str:
    return f"cam{index}_rtsp"


def sensor_name(index: int) -> str:
    return f"cam{index}"


def pipeline_toml(
    args: argparse.Namespace, urls: list[str], redis_url: str, metrics_port: int, save: Path, shm_dir: Path
) -> str:
    """The daemon config: the seed pipeline with one rtsp node per camera, one aggregator and one dumper."""
    lines = [
        f'[redis]\nurl = "{redis_url}"\ntransport = "{args.transport}"\n',
        f'[metrics]\nhost = "127.0.0.1"\nport = {metrics_port}\n',
        "[web]\nenabled = false\n",
        # --frame-ids: debug, each rtsp node logs every frame's id (frame_captured) to compare the ids
        # published with the ids in the written segments; that costs the camera node ~0.3 ms per frame (a
        # JSON line per frame), which a deployment at the default info level does not pay
        f'[logging]\nlevel = "{"debug" if args.frame_ids else "info"}"\nformat = "json"\nsummary_interval_s = 10\n',
        f"[daemon]\ngrace_period_s = {GRACE_PERIOD_S}\n",
    ]
    for index, url in enumerate(urls):
        lines.append(
            f'[[nodes]]\nname = "{rtsp_node_name(index)}"\nkind = "rtsp"\nurl = "{url}"\n'
            f'{_camera_topics(args)}sensor_name = "{sensor_name(index)}"\nrtsp_transport = "tcp"\n'
            f'frame_encoding = "{args.frame_encoding}"\nshm_dir = "{shm_dir}"\n'
            f'decode_threads = {args.decode_threads}\ndecoder = "{args.decoder}"\nrtsp_reader = "{args.rtsp_reader}"\n'
            + (f'record_dir = "{save}"\nbuffer_size = {args.buffer_size}\n' if args.record_in_camera else "")
        )
    if args.record_in_camera:  # the dumper catalogues what the cameras store, from their notices
        lines.append(
            f'[[nodes]]\nname = "{DUMPER}"\nkind = "video_local_dumper"\nsubscribe_topic = "{FRAME_TOPIC}"\n'
            f'save_dir = "{save}"\n'
        )
        return "\n".join(lines)
    lines.append(
        f'[[nodes]]\nname = "{AGGREGATOR}"\nkind = "image_to_video_aggregator"\nsubscribe_topic = "{FRAME_TOPIC}"\n'
        f'publish_topic = "{SEGMENT_TOPIC}"\nfps = {float(args.fps)}\nbuffer_size = {args.buffer_size}\n'
        f'overlap_size = 0\ncodec = "h264"\npreset = "{args.preset}"\ncrf = {args.crf}\nshm_dir = "{shm_dir}"\n'
        f"encoder_threads = {args.encoder_threads}\nbatch_wait_s = {args.batch_wait}\n"
    )
    lines.append(
        f'[[nodes]]\nname = "{DUMPER}"\nkind = "video_local_dumper"\nsubscribe_topic = "{SEGMENT_TOPIC}"\n'
        f'save_dir = "{save}"\n'
    )
    return "\n".join(lines)


def _camera_topics(args: argparse.Namespace) -> str:
    """With --packet-topic the camera's decoded frames go to a perception topic the bench does not read:
    perception's reading is perception's cost. In ``shm`` that ring would keep every unread frame for a consumer
    yet to come (``shm_consumer_timeout_s``, 120 s) and send the rest inline as JPEG; one second makes the camera
    node write the ring as it does for a perception consumer that keeps up."""
    if args.packet_topic:
        unread = "shm_consumer_timeout_s = 1.0\n" if args.frame_encoding == "shm" else ""
        return f'publish_topic = "{PERCEPTION_TOPIC}"\npacket_topic = "{FRAME_TOPIC}"\n{unread}'
    return f'publish_topic = "{FRAME_TOPIC}"\n'


def read_events(log_path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of the daemon and its nodes (they share its stderr)."""
    events = []
    with contextlib.suppress(FileNotFoundError):
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    events.append(json.loads(line))
    return events


def has_event(log_path: Path, name: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return f'"event": "{name}"' in log_path.read_text(errors="replace")
    return False


def scrape_published(metrics_port: int, record_in_camera: bool) -> dict[str, float]:
    """Frames each rtsp node passed on, from the daemon's /metrics: ``msightd_frames_published_total`` to the
    frame topic, or (recording in the camera) ``msightd_frames_read_total``."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    published: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if record_in_camera:
                counted = sample.name == "msightd_frames_read_total"
            else:
                counted = sample.name == "msightd_frames_published_total" and sample.labels.get("topic") == FRAME_TOPIC
            if counted:
                node = sample.labels["node"]
                published[node] = published.get(node, 0.0) + sample.value
    return published


def node_status(runtime_dir: Path) -> dict[str, dict[str, Any]]:
    """The daemon's node table (what ``msightd status --json`` prints), straight from its control socket:
    a CLI process per poll would cost ~0.3 s of CPU on the cores being measured."""
    from msightd.daemon.control import SOCKET_NAME, request_status

    return {node["name"]: node for node in request_status(runtime_dir / SOCKET_NAME)["nodes"]}


def all_running(runtime_dir: Path, names: list[str]) -> dict[str, dict[str, Any]] | None:
    with contextlib.suppress(OSError, ValueError):
        nodes = node_status(runtime_dir)
        if all(nodes.get(name, {}).get("state") == "running" for name in names):
            return nodes
    return None


@dataclass
class Window:
    """When the measurement window ran and what /metrics said at its ends."""

    published_t0: dict[str, float]
    published_t1: dict[str, float]
    window_s: float
    run_s: float
    stopped_at: float
    restarts: dict[str, int]


@dataclass
class PipelineRun:
    """Raw observations of one pipeline run, turned into results by :func:`bench.results.pipeline_results`."""

    events: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    window: Window
    tracked: dict[str, Tracked]
    kinds: dict[str, str]
    broker: dict[str, Any]


def run_pipeline(args: argparse.Namespace, urls: list[str], work: Path) -> PipelineRun:
    """Broker + daemon for ``args.duration`` s after every node runs; SIGTERM; collect logs and files."""
    from msightd.daemon.broker import RedisServerProcess

    save_dir, runtime_dir = work / "segments", Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))
    shm_dir = Path("/dev/shm" if os.path.isdir("/dev/shm") else work) / f"msightd-bench-{os.getpid()}"
    # persistence as the daemon's embedded broker has it by default, its file on a tmpfs as /run is
    broker_dir = shm_dir.with_name(shm_dir.name + "-broker") if args.broker_persistence == "aof" else None
    broker = RedisServerProcess(work / "redis.sock", log_file=work / "redis.log", persist_dir=broker_dir)
    metrics_port = free_port()
    config, log_path = work / "msightd.toml", work / "daemon.log"
    shared = [DUMPER] if args.record_in_camera else [AGGREGATOR, DUMPER]
    names = [rtsp_node_name(i) for i in range(len(urls))] + shared
    daemon: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        config.write_text(pipeline_toml(args, urls, broker.url, metrics_port, save_dir, shm_dir))
        command = [sys.executable, "-m", "msightd.cli.daemon", "run", "-c", str(config), "--runtime-dir"]
        daemon = start_group(
            [*command, str(runtime_dir)], log_path, {"MSIGHT_EDGE_DEVICE_NAME": "bench-edge", "NOTIFY_SOCKET": ""}
        )
        with Sampler() as sampler:
            sampler.track("daemon", daemon.pid, tree=False)
            sampler.track("broker", broker.pid or 0)
            for name, pid in wait_for_nodes(daemon, runtime_dir, names, log_path).items():
                sampler.track(name, pid)
            window = measure_window(args, sampler, metrics_port, runtime_dir)
            broker_held = broker_memory(broker.url, broker_dir)
            sampler.fast()  # the aggregator's and dumper's CPU at exit is their last sample
            stop_daemon(daemon, log_path)
            tracked = {label: sampler.get(label) for label in sampler.labels()}
    finally:
        if daemon is not None:
            stop_group(daemon)
        broker.stop()
        shutil.rmtree(runtime_dir, ignore_errors=True)
        shutil.rmtree(shm_dir, ignore_errors=True)
        if broker_dir is not None:
            shutil.rmtree(broker_dir, ignore_errors=True)
    kinds = {name: "rtsp" for name in names[: len(urls)]} | {DUMPER: "dumper"}
    if not args.record_in_camera:
        kinds[AGGREGATOR] = "aggregator"
    return PipelineRun(
        events=read_events(log_path),
        segments=read_segments(save_dir),
        window=window,
        tracked=tracked,
        kinds=kinds | {"broker": "broker", "daemon": "daemon"},
        broker=broker_held,
    )


def broker_memory(url: str, data_dir: Path | None) -> dict[str, Any]:
    """What the broker holds at the end of the measured window: Redis's own count of its data
    (``used_memory``), the server's RSS, the entries left in each topic (what consumers have not acknowledged
    yet: acknowledged ones are trimmed) and the append-only file (on a tmpfs, as /run is: RAM too)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("memory")
        entries = {topic: int(client.xlen(topic)) for topic in (FRAME_TOPIC, SEGMENT_TOPIC)}
    finally:
        client.close()
    aof = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) if data_dir else None
    return {
        "used_memory_mb": round(int(info["used_memory"]) / 2**20, 1),
        "rss_mb": round(int(info["used_memory_rss"]) / 2**20, 1),
        "stream_entries": entries,
        "append_only_file_mb": round(aof / 2**20, 1) if aof is not None else None,
    }


def wait_for_nodes(
    daemon: subprocess.Popen[bytes], runtime_dir: Path, names: list[str], log_path: Path
) -> dict[str, int]:
    """Node name -> pid once the daemon is ready and every node runs."""
    wait_until(lambda: has_event(log_path, "daemon_ready") or daemon.poll() is not None, 90, "the daemon to be ready")
    if daemon.poll() is not None:
        raise BenchError(f"msightd exited with {daemon.returncode}; see {log_path}:\n{tail(log_path)}")
    nodes = wait_until(lambda: all_running(runtime_dir, names), 60, "every node to run")
    return {name: int(nodes[name]["pid"]) for name in names}


def measure_window(args: argparse.Namespace, sampler: Sampler, metrics_port: int, runtime_dir: Path) -> Window:
    """Mark ``base`` now (every node running), ``t0`` after the warm-up and ``t1`` at the end of the run."""
    sampler.mark("base")
    started = time.monotonic()
    sleep_until(started + args.warmup)
    published_t0 = scrape_published(metrics_port, args.record_in_camera)
    sampler.mark("t0")
    t0 = time.monotonic()
    sleep_until(started + args.duration)
    published_t1 = scrape_published(metrics_port, args.record_in_camera)
    sampler.mark("t1")
    t1 = time.monotonic()
    restarts = {name: int(node["restarts"]) for name, node in node_status(runtime_dir).items()}
    return Window(published_t0, published_t1, t1 - t0, t1 - started, time.time(), restarts)


def stop_daemon(daemon: subprocess.Popen[bytes], log_path: Path) -> None:
    """SIGTERM: sources stop, the aggregator encodes its partial buffers, the dumper writes them."""
    daemon.send_signal(signal.SIGTERM)
    limit_s = 3 * GRACE_PERIOD_S + 30
    try:
        code = daemon.wait(limit_s)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"msightd did not stop within {limit_s:g} s") from exc
    if code != 0:
        raise BenchError(f"msightd exited with {code} on SIGTERM; see {log_path}:\n{tail(log_path)}")


def read_segments(save_dir: Path) -> list[dict[str, Any]]:
    """Every segment's JSON (frame ids, sizes), as the dumper wrote it."""
    segments = []
    for path in sorted(save_dir.glob("*.json")):
        with contextlib.suppress(OSError, json.JSONDecodeError):
            segments.append(json.loads(path.read_text()))
    return segments
