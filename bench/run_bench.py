"""CPU, memory, drops and latency of the msightd pipeline against an ffmpeg floor (issue 6).

Run ``python -m bench.run_bench --help`` from the repository root. What it does, in one run:

1. starts one real loopback RTSP camera per ``--cameras`` (``testbed/rtsp.py``, a GStreamer server
   looping an H.264 clip without re-encoding, so the camera costs ~1 % CPU and is not measured), a private
   ``redis-server`` on a unix socket (the broker), and ``msightd run`` on a generated TOML: one rtsp node per
   camera, one aggregator, one dumper, with the seed settings (10 fps, 100-frame segments, h264 veryfast crf 23);
2. samples every process from ``/proc`` while the pipeline runs for ``--duration`` seconds, then stops the daemon
   with SIGTERM (it flushes its partial buffers) and compares the frame ids the cameras published with the frame
   ids in the written segments' JSON files;
3. runs the floor after it (never concurrently: both would fight for the same cores): one ``ffmpeg`` per camera
   reading the same stream and writing the same 100-frame segments with the same codec, preset and crf;
4. prints a table and writes JSON (``--json``, default ``bench/results/latest.json``).

Dropped frames: each camera node reports how many frames it published when it stops; every written
segment's JSON lists its frame ids; dropped = published - distinct ids on disk, duplicated = ids on disk
more than once. ``--frame-ids`` compares ids one by one instead (and names dropped ones), but needs every
frame logged at debug level, which costs the camera nodes ~0.3 ms per frame that a deployment does not pay.
``--repeat N`` runs N pipeline + floor pairs: this machine's run-to-run noise (~+-1.5 ms per side) is then
visible rather than hidden in one ratio.

How CPU per frame is counted (utime+stime of the process, its reaped children and its live descendants):

* rtsp nodes, the broker, the daemon and ffmpeg do work per frame, continuously: CPU over the window from the end
  of ``--warmup`` to the stop, divided by the frames published (``/metrics``) or encoded (ffmpeg ``-progress``)
  in the same window;
* the aggregator and the dumper work per *segment* (a 100-frame encode is seconds of CPU in one lump), so a window
  cut mid-encode would be off by up to a segment. They are counted from the moment every node is running (startup
  imports excluded) to their exit, including the shutdown flush, divided by the frames in every segment they
  encoded / wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.ports import free_port
from testbed.rtsp import RtspServer, rtsp_server_available
from testbed.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent
FFMPEG = "/usr/bin/ffmpeg"  # Debian's build: the floor must not depend on the venv's PyAV libraries
#: The team's real roadside footage, when the repository sits beside ``shared/`` (else --clip or a generated clip)
SHARED_CLIPS = tuple(
    REPO_ROOT.parent / "shared" / "data" / name for name in ("mcity_gs_main_stadium1.mp4", "mcity_gs_main_stadium2.mp4")
)
DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "latest.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
EXIT_MISSING = 3
EXIT_FAILED = 1
SAMPLE_INTERVAL_S = 0.5
SHUTDOWN_SAMPLE_INTERVAL_S = 0.05
FRAME_TOPIC = "rtsp_images"
PERCEPTION_TOPIC = "perception_frames"
SEGMENT_TOPIC = "aggregated_video"
AGGREGATOR = "aggregator"
DUMPER = "dumper"
KIND_ORDER = ("rtsp", "aggregator", "dumper", "broker", "daemon")
GRACE_PERIOD_S = 60.0  # generous: the run measures steady state, not how a hurried shutdown loses frames


# -- options ---------------------------------------------------------------------------------------


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
    parser.add_argument("--preset", default="veryfast", help="x264 preset, pipeline and floor (default veryfast)")
    parser.add_argument("--crf", type=int, default=23, help="x264 crf, pipeline and floor (default 23)")
    parser.add_argument("--decoder", choices=("opencv", "pyav"), default="pyav", help="rtsp node decoder")
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


# -- /proc sampling --------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                children += [int(c) for c in Path(task.path, "children").read_text().split()]
    return children


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants: a node's CPU includes whatever it spawned."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        pending += _children(current)
    return pids


def _own_cpu_seconds(pid: int, reaped_children: bool = True) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields after it are fixed
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + ((cutime + cstime) if reaped_children else 0)) / CLK_TCK


def cpu_seconds(pid: int, tree: bool = True) -> float | None:
    """CPU time of ``pid`` (all threads) plus, with ``tree``, its reaped children and live descendants; None
    once it is gone. The daemon is measured without its tree: its descendants are the nodes, measured apart."""
    own = _own_cpu_seconds(pid, reaped_children=tree)
    if own is None or not tree:
        return own
    return own + sum(_own_cpu_seconds(child) or 0.0 for child in _tree(pid)[1:])


def rss_bytes(pid: int, tree: bool = True) -> int:
    """Resident memory of ``pid`` and, with ``tree``, its descendants (VmRSS; 0 once gone)."""
    total = 0
    for member in _tree(pid) if tree else [pid]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


@dataclass
class Tracked:
    """What the sampler knows about one process: CPU at named marks, CPU when last seen alive, peak RSS."""

    label: str
    pid: int
    tree: bool = True
    marks: dict[str, float] = field(default_factory=dict)
    last_cpu: float | None = None
    max_rss: int = 0


class Sampler:
    """Samples CPU and RSS of tracked processes from a background thread.

    The thread keeps ``last_cpu`` fresh so that the CPU of a process that has exited (and been reaped by the
    daemon, out of our reach) is known to within one sampling interval; :meth:`fast` shortens that interval
    while processes are stopping.
    """

    def __init__(self) -> None:
        self._tracked: dict[str, Tracked] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = SAMPLE_INTERVAL_S
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def track(self, label: str, pid: int, tree: bool = True) -> None:
        with self._lock:
            self._tracked[label] = Tracked(label, pid, tree)
        self._sample(self._tracked[label])

    def get(self, label: str) -> Tracked:
        return self._tracked[label]

    def labels(self) -> list[str]:
        return list(self._tracked)

    def mark(self, name: str) -> None:
        """Record every tracked process's CPU now, under ``name``."""
        with self._lock:
            for tracked in self._tracked.values():
                cpu = cpu_seconds(tracked.pid, tracked.tree)
                if cpu is not None:
                    tracked.marks[name] = cpu
                    tracked.last_cpu = cpu

    def fast(self) -> None:
        self._interval = SHUTDOWN_SAMPLE_INTERVAL_S

    def _sample(self, tracked: Tracked) -> None:
        cpu = cpu_seconds(tracked.pid, tracked.tree)
        if cpu is not None:
            tracked.last_cpu = cpu
            tracked.max_rss = max(tracked.max_rss, rss_bytes(tracked.pid, tracked.tree))

    def _run(self) -> None:
        last_rss = 0.0
        while not self._stop.wait(self._interval):
            with self._lock:
                for tracked in self._tracked.values():
                    cpu = cpu_seconds(tracked.pid, tracked.tree)
                    if cpu is None:
                        continue
                    tracked.last_cpu = cpu
                    if time.monotonic() - last_rss >= 1.0 - SHUTDOWN_SAMPLE_INTERVAL_S:
                        tracked.max_rss = max(tracked.max_rss, rss_bytes(tracked.pid, tracked.tree))
                if time.monotonic() - last_rss >= 1.0 - SHUTDOWN_SAMPLE_INTERVAL_S:
                    last_rss = time.monotonic()


# -- processes -------------------------------------------------------------------------------------


def start_group(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session (process group), output to ``log_path``, so cleanup can kill it all."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Signal the process, wait, then SIGKILL its whole process group (whatever it left behind)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    return wait_for(predicate, timeout_s, what, interval_s, error=BenchError)


class BenchError(RuntimeError):
    """The run could not be completed; the message says what went wrong."""


# -- clips and cameras -----------------------------------------------------------------------------


def resolve_clips(requested: list[Path] | None, work_dir: Path) -> list[Path]:
    """The clips the cameras loop: given ones, else the shared mcity footage, else a generated clip."""
    if requested:
        for clip in requested:
            if not clip.is_file():
                raise BenchError(f"--clip {clip} does not exist")
        return [clip.absolute() for clip in requested]
    shared = [clip for clip in SHARED_CLIPS if clip.is_file()]
    if shared:
        return shared
    from msightd.media.sample import write_sample_video

    print("run_bench: ../shared/data clips absent; generating a 1280x960 clip", file=sys.stderr)
    return [write_sample_video(work_dir / "generated_1280x960.mp4", frame_count=110, width=1280, height=960)]


def clip_info(clip: Path) -> dict[str, Any]:
    import av

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        return {
            "path": str(clip),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate or 0),
            "frames": stream.frames,
            "codec": stream.codec_context.name,
        }


@contextlib.contextmanager
def cameras(clips: list[Path], count: int) -> Iterator[list[RtspServer]]:
    """One RTSP server per camera (each its own stream, like real cameras), clips alternating."""
    servers: list[RtspServer] = []
    try:
        for index in range(count):
            server = RtspServer(source="file", file=clips[index % len(clips)])
            servers.append(server)
            server.start()
        for server in servers:
            server.wait_until_readable(timeout_s=30)
        yield servers
    finally:
        for server in servers:
            server.stop()


def restart_cameras(servers: list[RtspServer]) -> None:
    """Fresh cameras for the floor: all clients of a test server share one media pipeline, so a client that
    stopped reading (a node hung on stop) can leave it stalled for the next one. Same ports, same URLs."""
    for server in servers:
        server.restart()
    for server in servers:
        server.wait_until_readable(timeout_s=30)


# -- the pipeline run ------------------------------------------------------------------------------


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
            f'decode_threads = {args.decode_threads}\ndecoder = "{args.decoder}"\n'
        )
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
    if args.packet_topic:
        return f'publish_topic = "{PERCEPTION_TOPIC}"\npacket_topic = "{FRAME_TOPIC}"\n'
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


def scrape_published(metrics_port: int) -> dict[str, float]:
    """``msightd_frames_published_total`` per rtsp node, from the daemon's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    published: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "msightd_frames_published_total" and sample.labels.get("topic") == FRAME_TOPIC:
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
    """Raw observations of one pipeline run, turned into results by :func:`pipeline_results`."""

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
    names = [rtsp_node_name(i) for i in range(len(urls))] + [AGGREGATOR, DUMPER]
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
    kinds = {name: "rtsp" for name in names[:-2]} | {AGGREGATOR: "aggregator", DUMPER: "dumper"}
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
        raise BenchError(f"msightd exited with {daemon.returncode}; see {log_path}:\n{_tail(log_path)}")
    nodes = wait_until(lambda: all_running(runtime_dir, names), 60, "every node to run")
    return {name: int(nodes[name]["pid"]) for name in names}


def measure_window(args: argparse.Namespace, sampler: Sampler, metrics_port: int, runtime_dir: Path) -> Window:
    """Mark ``base`` now (every node running), ``t0`` after the warm-up and ``t1`` at the end of the run."""
    sampler.mark("base")
    started = time.monotonic()
    _sleep_until(started + args.warmup)
    published_t0 = scrape_published(metrics_port)
    sampler.mark("t0")
    t0 = time.monotonic()
    _sleep_until(started + args.duration)
    published_t1 = scrape_published(metrics_port)
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
        raise BenchError(f"msightd exited with {code} on SIGTERM; see {log_path}:\n{_tail(log_path)}")


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def read_segments(save_dir: Path) -> list[dict[str, Any]]:
    """Every segment's JSON (frame ids, sizes), as the dumper wrote it."""
    segments = []
    for path in sorted(save_dir.glob("*.json")):
        with contextlib.suppress(OSError, json.JSONDecodeError):
            segments.append(json.loads(path.read_text()))
    return segments


# -- results ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _per_frame(cpu_s: float | None, frames: float) -> dict[str, Any]:
    value = cpu_s / frames if cpu_s is not None and frames > 0 else None
    return {
        "cpu_s": _round(cpu_s),
        "frames": frames,
        "cpu_s_per_frame": _round(value, 6),
        "ms_per_frame": _round(value * 1000 if value is not None else None, 3),
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None


def _window_cpu(tracked: Tracked, start: str, end: str) -> float | None:
    if start in tracked.marks and end in tracked.marks:
        return tracked.marks[end] - tracked.marks[start]
    return None


def _lifetime_cpu(tracked: Tracked) -> float | None:
    if "base" in tracked.marks and tracked.last_cpu is not None:
        return tracked.last_cpu - tracked.marks["base"]
    return None


def _cores(tracked: Tracked, window_s: float) -> float | None:
    """Average cores used over the window (approximate for the aggregator, whose work comes in lumps)."""
    cpu = _window_cpu(tracked, "t0", "t1")
    return cpu / window_s if cpu is not None and window_s > 0 else None


def node_results(run: PipelineRun) -> dict[str, dict[str, Any]]:
    """CPU per frame, cores and peak RSS of each node, the broker and the daemon (see the module docstring)."""
    window_frames = {
        node: run.window.published_t1.get(node, 0.0) - run.window.published_t0.get(node, 0.0) for node in run.kinds
    }
    all_window_frames = sum(window_frames.values())
    encoded = sum(e.get("frames", 0) for e in run.events if e.get("event") == "segment_published")
    written = sum(e.get("frames", 0) for e in run.events if e.get("event") == "segment_written")
    results: dict[str, dict[str, Any]] = {}
    for label, tracked in sorted(run.tracked.items(), key=lambda item: KIND_ORDER.index(run.kinds[item[0]])):
        kind = run.kinds[label]
        if kind in ("aggregator", "dumper"):
            cpu, frames, method = _lifetime_cpu(tracked), encoded if kind == "aggregator" else written, "lifetime"
        else:
            frames = window_frames[label] if kind == "rtsp" else all_window_frames
            cpu, method = _window_cpu(tracked, "t0", "t1"), "window"
        results[label] = {
            "kind": kind,
            "pid": tracked.pid,
            **_per_frame(cpu, frames),
            "method": method,
            "cores": _round(_cores(tracked, run.window.window_s)),
            "startup_cpu_s": _round(tracked.marks.get("base")),
            "rss_max_mb": round(tracked.max_rss / 2**20, 1),
            "restarts": run.window.restarts.get(label, 0),
        }
    return results


def total_per_frame(nodes: dict[str, dict[str, Any]]) -> float | None:
    """CPU seconds per camera frame of the whole pipeline: every rtsp node's CPU over all their frames, plus
    each shared process's CPU per frame."""
    rtsp = [n for n in nodes.values() if n["kind"] == "rtsp"]
    shared = [n for n in nodes.values() if n["kind"] != "rtsp"]
    if any(n["cpu_s_per_frame"] is None for n in shared) or any(n["cpu_s"] is None for n in rtsp):
        return None
    rtsp_frames = sum(n["frames"] for n in rtsp)
    if rtsp_frames <= 0:
        return None
    return sum(n["cpu_s"] for n in rtsp) / rtsp_frames + sum(n["cpu_s_per_frame"] for n in shared)


def frame_accounting(run: PipelineRun) -> dict[str, Any]:
    """Frames each camera published against the frames in the written segments: by id with --frame-ids
    (every camera's per-frame log line), else by count (what each camera reports publishing when it
    stops, against the distinct frame ids in the segments)."""
    published: dict[int, str] = {}
    for event in run.events:
        if event.get("event") == "frame_captured" and "frame_id" in event:
            published[int(event["frame_id"])] = str(event.get("node"))
    counted = sum(
        int(e.get("packets_published", e.get("frames_published", 0)))  # packets: what --packet-topic records
        for e in run.events
        if e.get("event") == "source_stopped"
    )
    in_segments: list[int] = [int(f["frame_id"]) for s in run.segments for f in s.get("frames", [])]
    unique = set(in_segments)
    dropped = sorted(set(published) - unique)
    total = len(published) if published else counted
    missing = len(dropped) if published else max(0, counted - len(unique))
    return {
        "frames_published": total,
        "frames_published_reported": counted,
        "frames_in_segments": len(unique),
        "frames_dropped": missing,
        "drop_rate": _round(missing / total, 5) if total else None,
        "frames_duplicated": len(in_segments) - len(unique),
        "frames_unknown": len(unique - set(published)) if published else max(0, len(unique) - counted),
        "accounting": "frame ids" if published else "counts",
        "dropped_frame_ids_sample": dropped[:10],
        "dropped_by_node": _count_by(dropped, published),
    }


def _count_by(ids: list[int], owner: dict[int, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for frame_id in ids:
        counts[owner[frame_id]] = counts.get(owner[frame_id], 0) + 1
    return counts


def segment_results(run: PipelineRun, buffer_size: int) -> dict[str, Any]:
    """Capture-to-disk latency (the dumper's own measure) and bytes per full segment."""
    written = [e for e in run.events if e.get("event") == "segment_written"]
    latencies = [float(e["capture_to_disk_seconds"]) for e in written if e.get("frames") == buffer_size]
    sizes = [int(s["video_size_bytes"]) for s in run.segments if s.get("frame_count") == buffer_size]
    return {
        "segments_written": len(run.segments),
        "full_segments": len(sizes),
        "latency_s": {
            "p50": _round(percentile(latencies, 50)),
            "p99": _round(percentile(latencies, 99)),
            "max": _round(max(latencies) if latencies else None),
            "n": len(latencies),
        },
        "mb_per_segment": _round(sum(sizes) / len(sizes) / 1e6 if sizes else None),
        "encode_seconds_mean": _round(
            _mean([float(e["encode_seconds"]) for e in run.events if e.get("event") == "segment_published"])
        ),
    }


def overload(run: PipelineRun, buffer_size: int) -> dict[str, Any]:
    """Was the pipeline keeping up? Frames published but not on disk when SIGTERM came stay under ~one buffer plus
    one encode per camera when it keeps up, and grow with the run when it does not; a node killed after the grace
    period lost whatever it still held."""
    on_disk = sum(
        int(e.get("frames", 0))
        for e in run.events
        if e.get("event") == "segment_written" and _epoch(e.get("timestamp")) < run.window.stopped_at
    )
    cameras = sum(kind == "rtsp" for kind in run.kinds.values())
    published = sum(run.window.published_t1.values())
    return {
        "frames_on_disk_at_stop": on_disk,
        "backlog_at_stop_frames": int(published - on_disk),
        "backlog_limit_when_keeping_up": cameras * buffer_size * 2,
        "nodes_killed_on_stop": [e.get("node_name") for e in run.events if e.get("event") == "node_killed"],
    }


def _epoch(iso: Any) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return float("inf")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def pipeline_results(run: PipelineRun, buffer_size: int) -> dict[str, Any]:
    nodes = node_results(run)
    return {
        "run_s": round(run.window.run_s, 2),
        "window_s": round(run.window.window_s, 2),
        "nodes": nodes,
        "broker_memory": run.broker,
        "total_cpu_s_per_frame": _round(total_per_frame(nodes), 6),
        "total_cores": _round(sum(n["cores"] or 0.0 for n in nodes.values())),
        **frame_accounting(run),
        **segment_results(run, buffer_size),
        **overload(run, buffer_size),
    }


# -- the floor -------------------------------------------------------------------------------------


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
            raise BenchError(f"ffmpeg of camera {index} {state}:\n{_tail(work / f'floor_cam{index}.log')}")


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
            _sleep_until(started + args.warmup)
            frames_t0 = sum(progress_frames(p) for p in progress)
            sampler.mark("t0")
            t0 = time.monotonic()
            _sleep_until(started + args.duration)
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
    cpu = sum(_window_cpu(t, "t0", "t1") or 0.0 for t in tracked)
    sizes = full_segment_sizes(out_dirs, args.buffer_size)
    return {
        "processes": len(processes),
        "window_s": round(window_s, 2),
        **_per_frame(cpu, frames_t1 - frames_t0),
        "cores": _round(cpu / window_s),
        "rss_max_mb": round(max(t.max_rss for t in tracked) / 2**20, 1),
        "full_segments": len(sizes),
        "mb_per_segment": _round(sum(sizes) / len(sizes) / 1e6 if sizes else None),
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


# -- report ----------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def format_table(result: dict[str, Any]) -> str:
    """The human summary: per-node costs, totals, the floor and the headline ratio."""
    settings, pipeline, floor = result["settings"], result["pipeline"], result["floor"]
    clips = ", ".join(f"{Path(c['path']).name} {c['width']}x{c['height']}" for c in result["clips"])
    lines = [
        f"msightd benchmark: {settings['cameras']} camera(s) x {settings['duration_s']:g} s "
        f"(warm-up {settings['warmup_s']:g} s), transport {settings['transport']} "
        f"(broker persistence {settings['broker_persistence']}), "
        f"frames {settings['frame_encoding']}, h264 {settings['preset']} crf {settings['crf']}, "
        f"{settings['buffer_size']}-frame segments",
        f"clips: {clips}; {result['environment']['cpus']} CPUs",
        "",
        f"{'process':<18} {'kind':<11} {'CPU s/frame':>12} {'ms/frame':>9} {'cores':>6} {'RSS MB':>8} {'frames':>7}",
    ]
    for name, node in pipeline["nodes"].items():
        lines.append(
            f"{name:<18} {node['kind']:<11} {_fmt(node['cpu_s_per_frame'], '.5f'):>12} "
            f"{_fmt(node['ms_per_frame'], '.2f'):>9} {_fmt(node['cores'], '.2f'):>6} {node['rss_max_mb']:>8.1f} "
            f"{node['frames']:>7.0f}"
        )
    total = pipeline["total_cpu_s_per_frame"]
    lines.append(
        f"{'TOTAL pipeline':<30} {_fmt(total, '.5f'):>12} {_fmt(total * 1000 if total else None, '.2f'):>9} "
        f"{_fmt(pipeline['total_cores'], '.2f'):>6}"
    )
    if floor is not None:
        lines.append(
            f"{'FLOOR ffmpeg':<30} {_fmt(floor['cpu_s_per_frame'], '.5f'):>12} {_fmt(floor['ms_per_frame'], '.2f'):>9} "
            f"{_fmt(floor['cores'], '.2f'):>6} {floor['rss_max_mb']:>8.1f} {floor['frames']:>7.0f}"
        )
        lines.append(f"ratio total/floor: {_fmt(result['ratio_total_to_floor'], '.2f')}x")
    latency = pipeline["latency_s"]
    restarts = sum(node["restarts"] for node in pipeline["nodes"].values())
    lines += [
        "",
        f"frames: published {pipeline['frames_published']}, in segments {pipeline['frames_in_segments']}, "
        f"dropped {pipeline['frames_dropped']}, duplicated {pipeline['frames_duplicated']} "
        f"(by {pipeline['accounting']}); node restarts {restarts}",
        backlog_line(pipeline),
        broker_line(pipeline),
        f"capture-to-disk latency: p50 {_fmt(latency['p50'], '.2f')} s, p99 {_fmt(latency['p99'], '.2f')} s, "
        f"max {_fmt(latency['max'], '.2f')} s ({latency['n']} full segments); "
        f"mean encode {_fmt(pipeline['encode_seconds_mean'], '.2f')} s",
        f"MB per segment: pipeline {_fmt(pipeline['mb_per_segment'], '.2f')}"
        + (f", ffmpeg {_fmt(floor['mb_per_segment'], '.2f')}" if floor is not None else ""),
    ]
    return "\n".join(lines)


def backlog_line(pipeline: dict[str, Any]) -> str:
    line = (
        f"at stop: {pipeline['backlog_at_stop_frames']} frames published but not yet on disk "
        f"({'OVERLOADED: ' if overloaded(pipeline) else ''}"
        f"keeping up means < {pipeline['backlog_limit_when_keeping_up']})"
    )
    if pipeline["nodes_killed_on_stop"]:
        killed = ", ".join(pipeline["nodes_killed_on_stop"])
        line += f"; SIGKILLed after the {GRACE_PERIOD_S:g} s grace period: {killed}"
    return line


def broker_line(pipeline: dict[str, Any]) -> str:
    held = pipeline["broker_memory"]
    entries = ", ".join(f"{topic} {count}" for topic, count in held["stream_entries"].items())
    aof = held["append_only_file_mb"]
    return (
        f"broker at the end: used_memory {held['used_memory_mb']:.1f} MB, RSS {held['rss_mb']:.1f} MB "
        f"(peak {pipeline['nodes']['broker']['rss_max_mb']:.1f}); entries held: {entries}"
        + (f"; append-only file {aof:.1f} MB" if aof is not None else "")
    )


def overloaded(pipeline: dict[str, Any]) -> bool:
    return bool(pipeline["backlog_at_stop_frames"] >= pipeline["backlog_limit_when_keeping_up"])


def environment() -> dict[str, Any]:
    ffmpeg_version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        ffmpeg_version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    from msightd import __version__

    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "msightd")),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "msightd": __version__,
        "ffmpeg": ffmpeg_version,
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def _git(*args: str) -> str | None:
    """The msightd commit measured, so results can be compared across changes."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else None
    return None


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cameras": args.cameras,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "transport": args.transport,
        "frame_encoding": args.frame_encoding,
        "packet_topic": args.packet_topic,
        "decoder": args.decoder,
        "decode_threads": args.decode_threads,
        "encoder_threads": args.encoder_threads,
        "batch_wait_s": args.batch_wait,
        "broker_persistence": args.broker_persistence,
        "log_level": "debug" if args.frame_ids else "info",
        "codec": "h264",
        "preset": args.preset,
        "crf": args.crf,
        "buffer_size": args.buffer_size,
        "overlap_size": 0,
        "fps": args.fps,
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
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
        "ratio_total_to_floor": _round(total / floor_cost, 2) if total and floor_cost else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def summarise_pairs(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One run: itself. Several: the one with the median ratio (the table shown), plus every pair's
    ratio and totals, so machine noise between runs is visible instead of hidden in one number."""
    if len(results) == 1:
        return results[0]
    ranked = sorted(results, key=lambda r: (r["ratio_total_to_floor"] is None, r["ratio_total_to_floor"] or 0))
    median = ranked[(len(ranked) - 1) // 2]
    pairs = [
        {
            "ratio_total_to_floor": r["ratio_total_to_floor"],
            "pipeline_ms_per_frame": _round((r["pipeline"]["total_cpu_s_per_frame"] or 0) * 1000, 2),
            "floor_ms_per_frame": _round(r["floor"]["cpu_s_per_frame"] * 1000, 2) if r["floor"] else None,
            "frames_dropped": r["pipeline"]["frames_dropped"],
            "latency_p99_s": r["pipeline"]["latency_s"]["p99"],
            "finished_at": r["finished_at"],
        }
        for r in results
    ]
    return {**median, "pairs": pairs}


def format_pairs(result: dict[str, Any]) -> str:
    lines = ["", f"{len(result['pairs'])} pairs (the table above is the median one):"]
    for index, pair in enumerate(result["pairs"], 1):
        lines.append(
            f"  pair {index}: pipeline {_fmt(pair['pipeline_ms_per_frame'], '.2f')} ms/frame, floor "
            f"{_fmt(pair['floor_ms_per_frame'], '.2f')} ms/frame, ratio {_fmt(pair['ratio_total_to_floor'], '.2f')}x, "
            f"dropped {pair['frames_dropped']}, p99 {_fmt(pair['latency_p99_s'], '.2f')} s"
        )
    ratios = [p["ratio_total_to_floor"] for p in result["pairs"] if p["ratio_total_to_floor"] is not None]
    if ratios:
        middle = sorted(ratios)[(len(ratios) - 1) // 2]
        lines.append(f"  ratio: min {min(ratios):.2f}x, median {middle:.2f}x, max {max(ratios):.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
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
