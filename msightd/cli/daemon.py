"""The ``msightd`` command: ``run`` a pipeline from a TOML file, ``check`` a file, ask for ``status``,
or run the built-in ``demo`` (embedded Redis, synthetic camera, no setup)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msightd import __version__
from msightd.config import ConfigFileError, DaemonConfig, load_config, parse_config
from msightd.control import SOCKET_NAME, ControlServer, request_status
from msightd.embedded_redis import RedisServerError, RedisServerProcess
from msightd.logs import LOG_FORMATS, LOG_LEVELS, configure_logging, get_logger
from msightd.sdnotify import SystemdNotifier
from msightd.supervisor import ChildEnvironment, Supervisor
from msightd.supervisor_metrics import SupervisorMetrics

EXIT_CONFIG = 2
#: The embedded broker's append-only file, inside the runtime directory.
BROKER_DATA_DIR = "broker"


def default_runtime_dir() -> Path:
    """systemd's ``$RUNTIME_DIRECTORY``, else ``/run/msightd`` for root, else a per-user directory."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/run/msightd")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "msightd"
    return Path(f"/tmp/msightd-{os.getuid()}")


def _runtime_dir(args: argparse.Namespace, config: DaemonConfig | None) -> Path:
    if args.runtime_dir:
        return Path(args.runtime_dir).absolute()
    if config is not None and config.runtime_dir:
        return Path(config.runtime_dir).absolute()
    return default_runtime_dir()


def _error(message: str) -> int:
    print(f"msightd: error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _load(path: str) -> DaemonConfig | None:
    try:
        return load_config(path)
    except ConfigFileError as exc:
        for problem in exc.problems:
            _error(problem)
        return None


# -- check -----------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    for warning in config.warnings:
        print(f"msightd: warning: {warning}", file=sys.stderr)
    broker = config.redis_url or "embedded redis-server"
    print(f"{config.path}: OK, {len(config.nodes)} nodes ({', '.join(n.name for n in config.nodes)}); broker: {broker}")
    return 0


# -- status ----------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args.config) if args.config else None
    if args.config and config is None:
        return EXIT_CONFIG
    socket_path = _runtime_dir(args, config) / SOCKET_NAME
    try:
        status = request_status(socket_path)
    except (OSError, ValueError) as exc:
        print(
            f"msightd: no daemon answers on {socket_path} ({exc}); is msightd running with this runtime dir?",
            file=sys.stderr,
        )
        return 3
    if args.json:
        import json

        print(json.dumps(status, indent=2))
        return 0
    print(f"msightd pid {status['pid']}  config {status['config']}")
    print(f"{'NODE':<22} {'KIND':<26} {'STATE':<9} {'PID':>7} {'UPTIME':>9} {'RESTARTS':>8}  LAST EXIT")
    for node in status["nodes"]:
        uptime = f"{node['uptime_s']:.0f}s" if node["uptime_s"] is not None else "-"
        print(
            f"{node['name']:<22} {node['kind']:<26} {node['state']:<9} {node['pid'] or '-':>7} {uptime:>9} "
            f"{node['restarts']:>8}  {node['last_exit'] or '-'}"
        )
    return 0


# -- run -------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    return serve(config, args)


def serve(config: DaemonConfig, args: argparse.Namespace, stop_after_s: float | None = None) -> int:
    """Run the supervised pipeline described by ``config`` until SIGTERM/SIGINT (or ``stop_after_s``)."""
    level = args.log_level or config.logging.level
    log_format = args.log_format or config.logging.format
    configure_logging(level, log_format, node="msightd")
    log = get_logger()
    for warning in config.warnings:
        log.warning("config_warning", msg=warning)
    runtime_dir = _runtime_dir(args, config)
    try:
        runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        return _error(f"cannot create runtime directory {runtime_dir}: {exc.strerror}; pass a writable --runtime-dir")
    socket_path = runtime_dir / SOCKET_NAME
    try:
        request_status(socket_path, timeout_s=1.0)
        return _error(
            f"another msightd already runs with runtime directory {runtime_dir}; stop it or pass another --runtime-dir"
        )
    except (OSError, ValueError):
        pass
    metrics_dir = runtime_dir / "metrics" if config.metrics.enabled else None
    if metrics_dir is not None:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
    embedded: RedisServerProcess | None = None
    redis_url = config.redis_url
    if redis_url is None:
        embedded = RedisServerProcess(
            unix_socket=runtime_dir / "redis.sock",
            log_file=runtime_dir / "redis.log",
            persist_dir=runtime_dir / BROKER_DATA_DIR if config.persistence == "aof" else None,
            log=log,
        )
        try:
            embedded.start()
        except RedisServerError as exc:
            return _error(str(exc))
        redis_url = embedded.url
        log.info(
            "embedded_redis_started",
            socket=str(embedded.unix_socket),
            pid=embedded.pid,
            persistence=config.persistence,
            data_dir=str(embedded.persist_dir) if embedded.persist_dir else None,
        )
    supervisor_metrics = SupervisorMetrics(metrics_dir)
    http_server = None
    try:
        if config.metrics.enabled:
            from prometheus_client import start_http_server

            try:
                http_server, _ = start_http_server(
                    config.metrics.port, config.metrics.host, registry=supervisor_metrics.registry
                )
            except OSError as exc:
                return _error(
                    f"cannot serve metrics on {config.metrics.host}:{config.metrics.port}: {exc.strerror}; "
                    "set another [metrics] port or enabled = false"
                )
            log.info("metrics_serving", url=f"http://{config.metrics.host}:{config.metrics.port}/metrics")
        environment = ChildEnvironment(
            redis_url=redis_url,
            runtime_dir=runtime_dir,
            metrics_dir=metrics_dir,
            log_level=level,
            log_format="json" if log_format == "auto" and not sys.stderr.isatty() else log_format,
            summary_interval_s=config.logging.summary_interval_s,
        )
        supervisor = Supervisor(config, environment, supervisor_metrics, log, SystemdNotifier(), broker=embedded)
        supervisor.install_signal_handlers()
        control = ControlServer(socket_path, supervisor.snapshot)
        control.start()
        if stop_after_s is not None:
            timer = threading.Timer(stop_after_s, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
        log.info(
            "daemon_started",
            version=__version__,
            pid=os.getpid(),
            config=config.path,
            nodes=len(config.nodes),
            broker="embedded" if embedded else config.redis_url,
            runtime_dir=str(runtime_dir),
        )
        try:
            code = supervisor.run()
        finally:
            control.close()
    finally:
        if http_server is not None:
            http_server.shutdown()
        if embedded is not None:
            embedded.stop()
            log.info("embedded_redis_stopped")
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(runtime_dir / "ready", ignore_errors=True)
    log.info("daemon_stopped", code=code)
    return code


# -- demo ------------------------------------------------------------------------------------------


def demo_document(video: Path, save_dir: Path, metrics_port: int, shm_dir: Path) -> dict[str, Any]:
    """The seed tutorial's pipeline on a synthetic camera, as a config document."""
    return {
        "metrics": {"port": metrics_port},
        "logging": {"summary_interval_s": 10.0},
        "nodes": [
            {
                "name": "rtsp_node",
                "kind": "rtsp",
                "url": str(video),
                "loop": True,
                "publish_topic": "rtsp_images",
                "sensor_name": "test_camera",
                # as etc/msightd.toml: frames stay in shared memory, decoded straight to YUV
                "frame_encoding": "shm",
                "decoder": "pyav",
                "shm_dir": str(shm_dir),
            },
            {
                "name": "image_aggregator",
                "kind": "image_to_video_aggregator",
                "subscribe_topic": "rtsp_images",
                "publish_topic": "aggregated_video",
                "fps": 10.0,
                "buffer_size": 100,
                "overlap_size": 0,
                "shm_dir": str(shm_dir),
            },
            {
                "name": "video_dumper",
                "kind": "video_local_dumper",
                "subscribe_topic": "aggregated_video",
                "save_dir": str(save_dir),
            },
        ],
    }


def cmd_demo(args: argparse.Namespace) -> int:
    from msightd.sample import write_sample_video

    runtime_dir = _runtime_dir(args, None)
    save_dir = Path(args.save_dir).absolute()
    video = write_sample_video(runtime_dir / "demo-camera.mp4", frame_count=200, width=1280, height=720)
    # rings of its own, removed at the end: the demo's broker (and every frame reference) ends with it
    shm_dir = Path("/dev/shm", f"msightd-demo-{os.getuid()}") if Path("/dev/shm").is_dir() else runtime_dir / "rings"
    config = parse_config(demo_document(video, save_dir, args.metrics_port, shm_dir), "<msightd demo>")
    print(
        f"msightd demo: a synthetic 1280x720 camera at 10 fps -> 100-frame H.264 segments in {save_dir}"
        + (f" for {args.duration:g} s" if args.duration else " (Ctrl-C to stop)"),
        file=sys.stderr,
    )
    try:
        code = serve(config, args, stop_after_s=args.duration)
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)
        shutil.rmtree(runtime_dir / BROKER_DATA_DIR, ignore_errors=True)  # its entries point into those rings
    written = sorted(save_dir.glob("*.mp4"))
    print(f"msightd demo: {len(written)} segments in {save_dir}", file=sys.stderr)
    return code


# -- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msightd", description="Supervised MSight-compatible camera pipelines.")
    parser.add_argument("--version", action="version", version=f"msightd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def runtime_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--runtime-dir",
            help="control socket, embedded Redis and metrics files "
            "(default: $RUNTIME_DIRECTORY, /run/msightd as root, else $XDG_RUNTIME_DIR/msightd)",
        )

    def log_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--log-level", choices=LOG_LEVELS, help="overrides [logging] level")
        sub.add_argument("--log-format", choices=LOG_FORMATS, help="overrides [logging] format")

    run = commands.add_parser("run", help="run the pipeline in a TOML file")
    run.add_argument("-c", "--config", required=True, help="TOML file, e.g. etc/msightd.toml")
    runtime_flags(run)
    log_flags(run)
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check", help="validate a TOML file without starting anything")
    check.add_argument("-c", "--config", required=True)
    check.set_defaults(handler=cmd_check)

    status = commands.add_parser("status", help="show the nodes of the running daemon")
    status.add_argument("-c", "--config", help="config of the daemon (to find its runtime_dir)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    runtime_flags(status)
    status.set_defaults(handler=cmd_status)

    demo = commands.add_parser("demo", help="run the seed pipeline on a synthetic camera (embedded Redis)")
    demo.add_argument("--save-dir", default="./received_videos", help="where segments go (default ./received_videos)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--metrics-port", type=int, default=9464)
    runtime_flags(demo)
    log_flags(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
