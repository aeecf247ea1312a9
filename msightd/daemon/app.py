"""The daemon process's composition root: runtime directory, embedded broker, HTTP listeners (metrics and
health, web page), control socket and supervisor, wired together and torn down in order. Parent process only:
nothing here (or below) imports cv2, av or numpy."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from msightd import __version__
from msightd.config.model import DaemonConfig
from msightd.daemon.broker import RedisServerError, RedisServerProcess
from msightd.daemon.control import SOCKET_NAME, ControlServer, request_status
from msightd.daemon.metrics import SupervisorMetrics
from msightd.daemon.sdnotify import SystemdNotifier
from msightd.daemon.supervisor import Supervisor
from msightd.daemon.web.wiring import HttpListeners, ListenError
from msightd.logs import configure_logging, get_logger, redact_url
from msightd.protocol import HostSettings

#: The embedded broker's append-only file, inside the runtime directory.
BROKER_DATA_DIR = "broker"
#: Where camera nodes leave their latest frame for the web page, inside the runtime directory.
THUMBNAIL_DIR = "thumbnails"


class StartError(Exception):
    """The daemon cannot start; the message says what is wrong and what to do."""


def default_runtime_dir() -> Path:
    """systemd's ``$RUNTIME_DIRECTORY``, else ``/run/msightd`` for root, else a per-user directory."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/run/msightd")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "msightd"
    return Path(f"/tmp/msightd-{os.getuid()}")


def runtime_dir_for(args: argparse.Namespace, config: DaemonConfig | None) -> Path:
    if args.runtime_dir:
        return Path(args.runtime_dir).absolute()
    if config is not None and config.runtime_dir:
        return Path(config.runtime_dir).absolute()
    return default_runtime_dir()


def serve(config: DaemonConfig, args: argparse.Namespace, stop_after_s: float | None = None) -> int:
    """Run the supervised pipeline described by ``config`` until SIGTERM/SIGINT (or ``stop_after_s``).
    Raises :class:`StartError` when it cannot start."""
    level = args.log_level or config.logging.level
    log_format = args.log_format or config.logging.format
    configure_logging(level, log_format, node="msightd")
    log = get_logger()
    for warning in config.warnings:
        log.warning("config_warning", msg=warning)
    runtime_dir = runtime_dir_for(args, config)
    try:
        runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StartError(
            f"cannot create runtime directory {runtime_dir}: {exc.strerror}; pass a writable --runtime-dir"
        ) from None
    socket_path = runtime_dir / SOCKET_NAME
    try:
        request_status(socket_path, timeout_s=1.0)
    except (OSError, ValueError):
        pass
    else:
        raise StartError(
            f"another msightd already runs with runtime directory {runtime_dir}; stop it or pass another --runtime-dir"
        )
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
            raise StartError(str(exc)) from None
        redis_url = embedded.url
        log.info(
            "embedded_redis_started",
            socket=str(embedded.unix_socket),
            pid=embedded.pid,
            persistence=config.persistence,
            data_dir=str(embedded.persist_dir) if embedded.persist_dir else None,
        )
    supervisor_metrics = SupervisorMetrics(metrics_dir)
    listeners: HttpListeners | None = None
    code = 1
    try:
        host = HostSettings(
            redis_url=redis_url,
            transport=config.transport,
            log_level=level,
            log_format="json" if log_format == "auto" and not sys.stderr.isatty() else log_format,
            frame_log_level=logging.DEBUG,
            summary_interval_s=config.logging.summary_interval_s,
            thumbnail_dir=str(runtime_dir / THUMBNAIL_DIR),
        )
        supervisor = Supervisor(
            config, host, runtime_dir, metrics_dir, supervisor_metrics, log, SystemdNotifier(), broker=embedded
        )

        def health() -> tuple[int, dict[str, Any]]:
            report = supervisor.health()
            return report.http_status, report.to_json()

        listeners = HttpListeners(
            lambda: supervisor.config,
            supervisor.snapshot,
            health,
            supervisor_metrics.registry,
            runtime_dir / THUMBNAIL_DIR,
            log,
        )
        try:
            listeners.start()
        except ListenError as exc:
            raise StartError(str(exc)) from None
        supervisor.install_signal_handlers()
        control = ControlServer(socket_path, supervisor.status)
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
            broker="embedded" if embedded else redact_url(config.redis_url or ""),
            runtime_dir=str(runtime_dir),
        )
        try:
            code = supervisor.run()
        finally:
            control.close()
    finally:
        if listeners is not None:
            listeners.close()
        if embedded is not None:
            embedded.stop()
            log.info("embedded_redis_stopped")
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(runtime_dir / "nodes", ignore_errors=True)
        shutil.rmtree(runtime_dir / THUMBNAIL_DIR, ignore_errors=True)
    log.info("daemon_stopped", code=code)
    return code
