"""The ``msightd`` command: ``run`` a pipeline from a TOML file, ``check`` a file, ask for ``status``,
run the built-in ``demo`` (embedded Redis, synthetic camera, no setup), or look at recorded ``segments``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from msightd import __version__
from msightd.cli import segments
from msightd.config.load import load_config, parse_config
from msightd.config.model import DaemonConfig, MetricsConfig, WebConfig
from msightd.config.schema import ConfigFileError
from msightd.daemon.app import BROKER_DATA_DIR, StartError, runtime_dir_for, serve
from msightd.daemon.control import SOCKET_NAME, request_status
from msightd.daemon.demo import demo_document
from msightd.logs import LOG_FORMATS, LOG_LEVELS, redact_url
from msightd.protocol import EXIT_CONFIG

#: ``msightd status`` when the daemon answers but a node is failed, hung, silent or short of disk (for cron,
#: monit, Nagios); 3 means no daemon answered.
EXIT_UNHEALTHY = 1


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
    broker = redact_url(config.redis_url) if config.redis_url else "embedded redis-server"
    print(f"{config.path}: OK, {len(config.nodes)} nodes ({', '.join(n.name for n in config.nodes)}); broker: {broker}")
    return 0


# -- status ----------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args.config) if args.config else None
    if args.config and config is None:
        return EXIT_CONFIG
    socket_path = runtime_dir_for(args, config) / SOCKET_NAME
    try:
        status = request_status(socket_path)
    except (OSError, ValueError) as exc:
        print(
            f"msightd: no daemon answers on {socket_path} ({exc}); is msightd running with this runtime dir?",
            file=sys.stderr,
        )
        return 3
    healthy = status.get("health", {}).get("ok", True)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if healthy else EXIT_UNHEALTHY
    print(f"msightd pid {status['pid']}  config {status['config']}")
    print(
        f"{'NODE':<22} {'KIND':<26} {'STATE':<9} {'PID':>7} {'UPTIME':>9} {'RESTARTS':>8} {'HANGS':>5} "
        f"{'PROGRESS':>9}  LAST EXIT"
    )
    now = time.time()
    for node in status["nodes"]:
        uptime = f"{node['uptime_s']:.0f}s" if node["uptime_s"] is not None else "-"
        progress = f"{now - node['last_progress_at']:.0f}s ago" if node.get("last_progress_at") else "-"
        print(
            f"{node['name']:<22} {node['kind']:<26} {node['state']:<9} {node['pid'] or '-':>7} {uptime:>9} "
            f"{node['restarts']:>8} {node.get('hangs', 0):>5} {progress:>9}  {node['last_exit'] or '-'}"
        )
    for problem in status.get("health", {}).get("problems", []):
        print(f"unhealthy: {problem['node']}: {problem['problem']}: {problem['detail']}")
    return 0 if healthy else EXIT_UNHEALTHY


# -- run -------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        return serve(config, args)
    except StartError as exc:
        return _error(str(exc))


# -- demo ------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from msightd.media.sample import write_sample_video  # the demo's camera; the daemon itself never loads av

    runtime_dir = runtime_dir_for(args, None)
    save_dir = Path(args.save_dir).absolute()
    video = write_sample_video(runtime_dir / "demo-camera.mp4", frame_count=200, width=1280, height=720)
    # rings of its own, removed at the end: the demo's broker (and every frame reference) ends with it
    shm_dir = Path("/dev/shm", f"msightd-demo-{os.getuid()}") if Path("/dev/shm").is_dir() else runtime_dir / "rings"
    document = demo_document(video, save_dir, args.metrics_port, shm_dir, args.web_port)
    config = parse_config(document, "<msightd demo>")
    print(
        f"msightd demo: a synthetic 1280x720 camera at 10 fps -> 100-frame H.264 segments in {save_dir}"
        + (f" for {args.duration:g} s" if args.duration else " (Ctrl-C to stop)")
        + f"; watch it on http://127.0.0.1:{args.web_port}/",
        file=sys.stderr,
    )
    try:
        code = serve(config, args, stop_after_s=args.duration)
    except StartError as exc:
        code = _error(str(exc))
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
    demo.add_argument("--metrics-port", type=int, default=MetricsConfig().port, help=f"default {MetricsConfig().port}")
    demo.add_argument("--web-port", type=int, default=WebConfig().port, help=f"web page; default {WebConfig().port}")
    runtime_flags(demo)
    log_flags(demo)
    demo.set_defaults(handler=cmd_demo)
    segments.build_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
