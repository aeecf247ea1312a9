"""Host one node in this process: logging, signals, metrics, bus, then ``node.run()``.

Both the ``msight_launch_*`` commands and the daemon's children (``python -m msightd.host <name>``, see
:mod:`msightd.protocol`) end here, so a node behaves the same ad hoc and supervised. Under the daemon
(``parent_pid`` set) the process also dies with its parent: the kernel sends SIGTERM when the daemon dies
(``PR_SET_PDEATHSIG``), and a watcher thread catches the case where the daemon died before that was armed.
A SIGUSR1 makes the process dump every thread's stack to stderr (faulthandler, from C: it works while the
interpreter is stuck), which the daemon asks for before it kills a hung node.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import sys
import threading
import time
from typing import Any

import redis

from msightd.bus.connection import resolve_redis_settings
from msightd.bus.router import TopicRouter, TopicSettings
from msightd.config.schema import ConfigFileError, build_options
from msightd.identity import device_name
from msightd.logs import configure_logging, get_logger
from msightd.metrics import NodeMetrics
from msightd.nodes.kinds import NODE_KINDS
from msightd.nodes.options import ConfigError
from msightd.nodes.runtime import NodeRuntime, Pulse
from msightd.pdeathsig import die_with_parent
from msightd.protocol import EXIT_CONFIG, EXIT_FAILURE, LAUNCH_ENV, ChildLaunch, HostSettings
from msightd.stop import StopFlag

#: Seconds a node whose daemon died may take to flush before it exits regardless.
ORPHAN_GRACE_S = 20.0


def _die_with_parent(stop: StopFlag, expected: int | None) -> None:
    if expected is None:
        return
    die_with_parent()  # the daemon also sets it before exec; this covers other hosts

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(1.0)
        stop.set()
        # An orphan must never linger: whatever the node is stuck on, it is gone after the grace period.
        time.sleep(ORPHAN_GRACE_S)
        os.write(2, b'{"event": "orphan_exit", "msg": "the daemon is gone and the node did not stop in time"}\n')
        os._exit(EXIT_FAILURE)

    if os.getppid() != expected:
        stop.set()
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_node(kind: str, options: Any, host: HostSettings) -> int:
    """Run one node until SIGTERM/SIGINT or until it cannot go on; return the exit code."""
    device = device_name()
    configure_logging(host.log_level, host.log_format, device=device, node=options.name)
    log = get_logger()
    stop = StopFlag()

    received: list[str] = []

    def request_stop(signum: int, _frame: object) -> None:
        # Only flag it: logging from a signal handler can deadlock on the stream lock a thread holds.
        received.append(signal.Signals(signum).name)
        stop.set()

    def report_stop() -> None:
        stop.wait()
        log.info("stop_requested", signal=received[0] if received else "parent exited")

    threading.Thread(target=report_stop, name="stop-report", daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    _die_with_parent(stop, host.parent_pid)

    metrics = NodeMetrics(options.name)
    if host.metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(host.metrics_port, addr=host.metrics_host, registry=metrics.registry)
        except OSError as exc:
            log.error(
                "metrics_port_unavailable",
                port=host.metrics_port,
                error=str(exc),
                msg=f"cannot serve metrics on port {host.metrics_port}: {exc.strerror}; pick a free --metrics-port",
            )
            return EXIT_CONFIG
    settings = resolve_redis_settings(host.redis_url)
    bus = TopicRouter(
        settings,
        log,
        options.name,
        topics={name: TopicSettings(**value) for name, value in host.topics.items()},
        default=TopicSettings(host.transport, host.stream_maxlen),  # type: ignore[arg-type]
    )
    if NODE_KINDS[kind].topics(options):  # a node without topics (an uploader of a save dir) needs no broker
        _check_broker(settings, log)
    runtime = NodeRuntime(
        bus=bus,
        log=log,
        metrics=metrics,
        device_name=device,
        stop=stop,
        frame_log_level=host.frame_log_level,
        summary_interval_s=host.summary_interval_s,
        mark_ready=_ready_marker(log, host.ready_file),
        heartbeat=Pulse(host.heartbeat_file, also=metrics.refresh_rates),
        progress=Pulse(host.progress_file),
        thumbnail_dir=host.thumbnail_dir,
        worker_id=host.worker_id,
    )
    try:
        node = NODE_KINDS[kind].load()(options, runtime)
    except ConfigError as exc:
        log.error("invalid_config", msg=str(exc))
        return EXIT_CONFIG
    topics = {topic: bus.settings_for(topic).transport for topic in NODE_KINDS[kind].topics(options)}
    log.info("node_started", kind=kind, pid=os.getpid(), broker=settings.describe(), transports=topics)
    _freeze_startup_objects()
    try:
        code: int = node.run()
    finally:
        bus.close()
    log.info("node_exited", code=code)
    sys.stdout.flush()
    return code


def _freeze_startup_objects() -> None:
    """Move everything made so far (the imported media stack: hundreds of thousands of objects that live as
    long as the process) out of the garbage collector's sight, so the collections that every frame's
    short-lived objects trigger never traverse them again (py-spy caught a camera node inside the
    collector; the CPU saved was within the bench's noise)."""
    gc.collect()
    gc.freeze()


def _ready_marker(log: Any, path: str | None) -> Any:
    """Under the daemon, readiness is a file the supervisor watches for."""

    def mark_ready() -> None:
        log.info("node_ready")
        if path:
            with open(path, "w") as file:
                file.write(str(os.getpid()))

    return mark_ready


def _check_broker(settings: Any, log: Any) -> None:
    """Say clearly, once, when the broker is not there; the node still starts and keeps retrying."""
    client = settings.client(socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        log.error(
            "broker_auth_failed",
            broker=settings.describe(),
            error=str(exc),
            msg="Redis refused the credentials; check the username/password in the URL or MSIGHT_ variables",
        )
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        log.error(
            "broker_unreachable",
            broker=settings.describe(),
            error=str(exc),
            msg=f"cannot reach Redis at {settings.describe()}: start redis-server or pass --redis-url / "
            "MSIGHT_REDIS_URL; retrying in the background",
        )
    finally:
        client.close()


def main() -> int:
    """A node process started by the daemon: ``python -m msightd.host <name>``, the :class:`ChildLaunch` JSON
    in ``MSIGHTD_NODE_LAUNCH`` (taken out of the environment, so nothing this process starts inherits it)."""
    try:
        launch = ChildLaunch.from_json(os.environ.pop(LAUNCH_ENV, ""))
        kind = NODE_KINDS[launch.kind]
        options = build_options(kind.options_class, launch.options, f"node {launch.options.get('name')!r}")
    except (KeyError, TypeError, ValueError, ConfigFileError) as exc:
        print(f"msightd node: invalid launch payload: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return run_node(kind.name, options, launch.host)


if __name__ == "__main__":
    sys.exit(main())
