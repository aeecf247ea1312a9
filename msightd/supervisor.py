"""Run every configured node in its own child process and keep it running.

Modelled on gunicorn's arbiter and supervisor's process states: signal handlers only queue the signal
and write a byte to a self-pipe; one main loop wakes on it (or every ``TICK_S``), handles the queued
signals, reaps exited children, and starts those whose backoff has elapsed. Each node's life is an
explicit state machine (:class:`NodeState`); the restart policy is data (:class:`RestartPolicy`).

Children are ``python -m msightd.cli.child`` processes: a separate address space per node, so a crash or
leak in one cannot touch another. They get SIGTERM from the kernel if the daemon dies (``PDEATHSIG``),
so no child outlives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from msightd.config import ConfigFileError, DaemonConfig, NodeSpec, RestartPolicy, load_config
from msightd.embedded_redis import RedisServerError, RedisServerProcess
from msightd.nodes import NODE_KINDS
from msightd.nodes.base import EXIT_CONFIG
from msightd.pdeathsig import die_with_parent
from msightd.sdnotify import SystemdNotifier
from msightd.supervisor_metrics import SupervisorMetrics

TICK_S = 0.5


class NodeState(enum.Enum):
    STOPPED = "stopped"  # not running, and not meant to be (never started, or stopped on purpose)
    STARTING = "starting"  # process started, not yet ready
    RUNNING = "running"  # ready (subscribed / source opened)
    BACKOFF = "backoff"  # exited; waiting to be restarted
    STOPPING = "stopping"  # SIGTERM sent, waiting for it to exit
    EXITED = "exited"  # exited and the policy says leave it down
    FAILED = "failed"  # start limit hit, or bad configuration: left down until reload


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


@dataclass
class SupervisedNode:
    """One node's process life. Mutated only by the supervisor's main loop."""

    spec: NodeSpec
    state: NodeState = NodeState.STOPPED
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # wall clock, for uptime
    started_monotonic: float = 0.0
    restarts: int = 0
    consecutive_failures: int = 0
    last_exit: str | None = None
    next_start_at: float = 0.0
    start_times: deque[float] = field(default_factory=deque)
    ready_file: Path | None = None
    past_pids: list[int] = field(default_factory=list)  # whose metrics files are this node's

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def snapshot(self) -> dict[str, Any]:
        alive = self.process is not None and self.state in (NodeState.STARTING, NodeState.RUNNING, NodeState.STOPPING)
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "state": self.state.value,
            "pid": self.pid if alive else None,
            "uptime_s": round(time.time() - self.started_at, 1) if alive else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "restart_policy": self.spec.restart.restart,
        }


@dataclass(frozen=True)
class ChildEnvironment:
    """What every child gets besides its own spec."""

    redis_url: str
    runtime_dir: Path
    metrics_dir: Path | None
    log_level: str
    log_format: str
    summary_interval_s: float


class Supervisor:
    def __init__(
        self,
        config: DaemonConfig,
        env: ChildEnvironment,
        metrics: SupervisorMetrics,
        log: structlog.typing.FilteringBoundLogger,
        notifier: SystemdNotifier,
        broker: RedisServerProcess | None = None,
    ) -> None:
        self.config = config
        self._env = env
        self._metrics = metrics
        self._log = log
        self._notifier = notifier
        self._nodes: dict[str, SupervisedNode] = {}
        self._signals: deque[int] = deque()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._stopping = False
        self._announced_ready = False
        self._snapshot: dict[str, Any] = {"nodes": []}
        self._broker = broker

    # -- signals ---------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self._queue_signal)

    def _queue_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b".")

    def _sleep(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self._wake_read], [], [], timeout_s)
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_read, 4096):
                    pass

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Start all nodes and supervise them until SIGTERM/SIGINT; return the daemon's exit code."""
        for spec in self._start_order(self.config.nodes):
            self._nodes[spec.name] = SupervisedNode(spec)
        for node in self._start_order_nodes():
            self._start(node)
        while not self._stopping:
            self._sleep(TICK_S)
            self._handle_signals()
            if self._stopping:
                break
            self._reap()
            self._promote_ready()
            self._start_due()
            self._announce_ready_once()
            self._keep_broker_up()
            self._notifier.watchdog()
            self._publish_snapshot()
        self._notifier.stopping()
        self._log.info("daemon_stopping", nodes=len(self._nodes))
        self._stop_nodes(list(self._nodes.values()))
        self._publish_snapshot()
        return 0

    def _keep_broker_up(self) -> None:
        """The embedded redis-server is supervised too: if it dies, start it again on the same socket
        (nodes reconnect by themselves; with persistence it reloads what it held from its append-only file,
        without, that is gone)."""
        if self._broker is None or self._broker.running():
            return
        self._log.error("embedded_redis_died", msg="the embedded redis-server exited; starting it again")
        try:
            self._broker.start()
        except RedisServerError as exc:
            self._log.error("embedded_redis_restart_failed", error=str(exc))
            return
        self._metrics.broker_restarts.inc()
        self._log.info("embedded_redis_restarted", pid=self._broker.pid)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._log.info("stop_requested", signal=signal.Signals(signum).name)
                self._stopping = True
            elif signum == signal.SIGHUP:
                self.reload()

    def _start_order(self, specs: Iterable[NodeSpec]) -> list[NodeSpec]:
        """Consumers first, so they are subscribed before producers publish."""
        return sorted(specs, key=lambda s: -NODE_KINDS[s.kind].stage)

    def _start_order_nodes(self) -> list[SupervisedNode]:
        return [self._nodes[s.name] for s in self._start_order(n.spec for n in self._nodes.values())]

    # -- starting --------------------------------------------------------------------------------

    def _child_command(self, spec: NodeSpec) -> list[str]:
        payload = {
            "kind": spec.kind,
            "options": dataclasses.asdict(spec.options),
            "host": {
                "redis_url": self._env.redis_url,
                "topics": {topic: dataclasses.asdict(settings) for topic, settings in spec.topics},
                "log_level": self._env.log_level,
                "log_format": self._env.log_format,
                "summary_interval_s": self._env.summary_interval_s,
            },
        }
        return [sys.executable, "-m", "msightd.cli.child", json.dumps(payload)]

    def _start(self, node: SupervisedNode) -> None:
        now = time.monotonic()
        policy = node.spec.restart
        while node.start_times and node.start_times[0] < now - policy.start_limit_interval:
            node.start_times.popleft()
        if len(node.start_times) >= policy.start_limit_burst:
            self._fail(
                node,
                f"start limit hit: {policy.start_limit_burst} starts within "
                f"{policy.start_limit_interval:g} s; last {node.last_exit}",
            )
            return
        node.start_times.append(now)
        node.ready_file = self._env.runtime_dir / "ready" / f"{node.spec.name}.ready"
        node.ready_file.parent.mkdir(parents=True, exist_ok=True)
        node.ready_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            "MSIGHTD_PARENT_PID": str(os.getpid()),
            "MSIGHTD_READY_FILE": str(node.ready_file),
        }
        if self._env.metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self._env.metrics_dir)
        # TLS files reach the nodes the way MSight passes them (see msightd.bus.connection)
        env.update({f"MSIGHT_REDIS_MESSAGE_BROKER_{key}": path for key, path in self.config.redis_tls.items()})
        node.process = subprocess.Popen(
            self._child_command(node.spec), env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        node.past_pids.append(node.process.pid)
        node.started_at = time.time()
        node.started_monotonic = now
        self._set_state(node, NodeState.STARTING)
        self._log.info("node_starting", node_name=node.spec.name, kind=node.spec.kind, pid=node.process.pid)

    def _promote_ready(self) -> None:
        for node in self._nodes.values():
            if node.state is NodeState.STARTING and node.ready_file is not None and node.ready_file.exists():
                self._set_state(node, NodeState.RUNNING)
                self._metrics.up.labels(node.spec.name).set(1)
                self._log.info("node_running", node_name=node.spec.name, pid=node.pid)
            # a node that stayed up for a while has recovered: its next failure backs off from scratch
            uptime_s = time.monotonic() - node.started_monotonic
            if node.state is NodeState.RUNNING and uptime_s > node.spec.restart.restart_delay_max:
                node.consecutive_failures = 0

    def _start_due(self) -> None:
        now = time.monotonic()
        for node in self._start_order_nodes():
            if node.state is NodeState.BACKOFF and now >= node.next_start_at:
                node.restarts += 1
                self._metrics.restarts.labels(node.spec.name).inc()
                self._start(node)

    def _announce_ready_once(self) -> None:
        if self._announced_ready:
            return
        waiting = [n for n in self._nodes.values() if n.state is NodeState.STARTING]
        if not waiting:
            self._announced_ready = True
            running = sum(n.state is NodeState.RUNNING for n in self._nodes.values())
            self._notifier.ready(f"{running}/{len(self._nodes)} nodes running")
            self._log.info("daemon_ready", running=running, nodes=len(self._nodes))

    # -- exits -----------------------------------------------------------------------------------

    def _reap(self) -> None:
        for node in self._nodes.values():
            if node.process is None or node.state not in (NodeState.STARTING, NodeState.RUNNING):
                continue
            code = node.process.poll()
            if code is not None:
                self._on_exit(node, code)

    def _on_exit(self, node: SupervisedNode, code: int) -> None:
        self._forget_process(node, code)
        policy: RestartPolicy = node.spec.restart
        log = self._log.bind(node_name=node.spec.name, pid=node.pid, exit=node.last_exit)
        if code == EXIT_CONFIG:
            self._fail(node, f"{node.last_exit}: the node refused its configuration (see its log); fix and reload")
            return
        if policy.restart == "never" or (policy.restart == "on-failure" and code == 0):
            self._set_state(node, NodeState.EXITED)
            log.warning("node_exited", restart=policy.restart)
            return
        delay = min(policy.restart_delay_max, policy.restart_delay * (2**node.consecutive_failures))
        node.consecutive_failures += 1
        node.next_start_at = time.monotonic() + delay
        self._set_state(node, NodeState.BACKOFF)
        log.warning("node_died", restart_in_s=round(delay, 3), restarts=node.restarts)

    def _forget_process(self, node: SupervisedNode, code: int) -> None:
        node.last_exit = describe_exit(code)
        self._metrics.up.labels(node.spec.name).set(0)
        if node.process is not None:
            self._metrics.process_dead(node.process.pid)

    def _fail(self, node: SupervisedNode, reason: str) -> None:
        node.last_exit = reason
        self._set_state(node, NodeState.FAILED)
        self._metrics.up.labels(node.spec.name).set(0)
        self._log.error(
            "node_failed", node_name=node.spec.name, reason=reason, msg=f"node {node.spec.name!r} left down: {reason}"
        )

    def _set_state(self, node: SupervisedNode, state: NodeState) -> None:
        node.state = state
        self._metrics.set_state(node.spec.name, state.value, [s.value for s in NodeState])

    # -- stopping --------------------------------------------------------------------------------

    def _stop_nodes(self, nodes: list[SupervisedNode]) -> None:
        """Stop in pipeline order (sources first, so aggregators flush into still-running dumpers)."""
        by_stage: dict[int, list[SupervisedNode]] = {}
        for node in nodes:
            by_stage.setdefault(NODE_KINDS[node.spec.kind].stage, []).append(node)
        for stage in sorted(by_stage):
            self._stop_group(by_stage[stage])

    def _stop_group(self, nodes: list[SupervisedNode]) -> None:
        running = [n for n in nodes if n.process is not None and n.process.poll() is None]
        for node in running:
            self._set_state(node, NodeState.STOPPING)
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
            self._log.info("node_stopping", node_name=node.spec.name, pid=node.pid)
        deadline = time.monotonic() + self.config.grace_period_s
        while any(n.process is not None and n.process.poll() is None for n in running):
            if time.monotonic() > deadline:
                for node in running:
                    if node.process is not None and node.process.poll() is None:
                        self._log.error(
                            "node_killed",
                            node_name=node.spec.name,
                            pid=node.pid,
                            msg=f"no exit within the {self.config.grace_period_s:g} s grace period",
                        )
                        node.process.kill()
                        node.process.wait()
                break
            self._notifier.watchdog()
            time.sleep(0.05)
        for node in nodes:
            if node.process is not None:
                code = node.process.wait()
                self._forget_process(node, code)
                node.process = None
            self._set_state(node, NodeState.STOPPED)
            self._log.info("node_stopped", node_name=node.spec.name, exit=node.last_exit)

    # -- reload ----------------------------------------------------------------------------------

    def reload(self) -> None:
        """Apply a changed config file: restart changed nodes, start new ones, stop removed ones."""
        self._notifier.reloading()
        try:
            new = load_config(self.config.path)
        except ConfigFileError as exc:
            for problem in exc.problems:
                self._log.error(
                    "reload_refused", problem=problem, msg="config not reloaded; the running pipeline stays"
                )
            self._notifier.ready("reload refused")
            return
        for section in ("redis_url", "metrics", "logging", "runtime_dir"):
            if getattr(new, section) != getattr(self.config, section):
                self._log.warning(
                    "reload_needs_restart", setting=section, msg=f"{section} changed: restart the daemon to apply it"
                )
        old_specs = {n.spec.name: n.spec for n in self._nodes.values()}
        new_specs = {s.name: s for s in new.nodes}
        removed = [self._nodes[name] for name in old_specs if name not in new_specs]
        changed = [name for name in old_specs if name in new_specs and new_specs[name] != old_specs[name]]
        added = [name for name in new_specs if name not in old_specs]
        failed = [
            name
            for name in old_specs
            if name in new_specs
            and name not in changed
            and self._nodes[name].state in (NodeState.FAILED, NodeState.EXITED)
        ]
        self._stop_nodes(removed + [self._nodes[name] for name in changed])
        for node in removed:
            del self._nodes[node.spec.name]
            self._metrics.forget(node.spec.name, [s.value for s in NodeState], node.past_pids)
        for name in changed + added + failed:
            node = self._nodes.get(name) or SupervisedNode(new_specs[name])
            node.spec = new_specs[name]
            node.start_times.clear()
            node.consecutive_failures = 0
            self._nodes[name] = node
        self.config = dataclasses.replace(new, redis_url=self.config.redis_url)
        for node in self._start_order_nodes():
            if node.spec.name in changed + added + failed:
                self._start(node)
        self._log.info(
            "reloaded", changed=changed, added=added, removed=[n.spec.name for n in removed], restarted_failed=failed
        )
        self._notifier.ready("reloaded")

    # -- status ----------------------------------------------------------------------------------

    def _publish_snapshot(self) -> None:
        self._snapshot = {
            "pid": os.getpid(),
            "config": self.config.path,
            "nodes": [n.snapshot() for n in self._nodes.values()],
        }

    def snapshot(self) -> dict[str, Any]:
        """Thread-safe: the control socket thread reads the last published snapshot."""
        return self._snapshot
