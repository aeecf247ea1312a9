"""Run every configured node in its own child process and keep it running.

Modelled on gunicorn's arbiter: signal handlers only queue the signal and write a byte to a self-pipe; one
main loop wakes on it (or every ``TICK_S``) and, in order, handles queued signals, reaps exited children,
kills hung ones (a heartbeat older than the node's ``liveness_timeout_s``, like gunicorn's
``murder_workers``), advances stops, promotes ready nodes and starts those whose backoff has elapsed. Nothing
in the loop waits for a child: a stop is a state with a deadline (:mod:`msightd.daemon.process`).

Children are ``python -m msightd.host`` processes (:mod:`msightd.protocol`): a separate address space per
node, so a crash or leak in one cannot touch another. They get SIGTERM from the kernel if the daemon dies
(``PDEATHSIG``), so no child outlives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import subprocess
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

from msightd.config.load import load_config
from msightd.config.model import DaemonConfig, NodeSpec
from msightd.config.schema import ConfigFileError
from msightd.daemon.broker import RedisServerProcess
from msightd.daemon.health import HealthReport, disk_low_thresholds, pipeline_health
from msightd.daemon.liveness import scan_liveness
from msightd.daemon.metrics import SupervisorMetrics
from msightd.daemon.process import AfterStop, NodeFiles, NodeState, ReloadPlan, SupervisedNode, describe_exit
from msightd.daemon.sdnotify import SystemdNotifier
from msightd.identity import WorkerIds
from msightd.nodes.kinds import NODE_KINDS
from msightd.pdeathsig import die_with_parent
from msightd.protocol import EXIT_CONFIG, METRICS_DIR_ENV, TLS_ENV_PREFIX, ChildLaunch, HostSettings

TICK_S = 0.5


def filesystem_bytes(directory: str) -> int | None:
    """Size of the filesystem holding ``directory`` (None if it cannot be read: a disk not mounted yet)."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_blocks * stats.f_frsize


#: How long a hung node gets to write its stack dump (SIGUSR1) before SIGKILL.
HANG_DUMP_WAIT_S = 0.5


class Supervisor:
    def __init__(
        self,
        config: DaemonConfig,
        host: HostSettings,
        runtime_dir: Path,
        metrics_dir: Path | None,
        metrics: SupervisorMetrics,
        log: structlog.typing.FilteringBoundLogger,
        notifier: SystemdNotifier,
        broker: RedisServerProcess | None = None,
    ) -> None:
        self.config = config
        self._host = host
        self._worker_ids = WorkerIds()
        self._nodes_dir = runtime_dir / "nodes"
        self._metrics_dir = metrics_dir
        self._metrics = metrics
        self._log = log
        self._notifier = notifier
        self._nodes: dict[str, SupervisedNode] = {}
        self._signals: deque[int] = deque()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._shutting_down = False
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

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT) and not self._shutting_down:
                self._log.info("stop_requested", signal=signal.Signals(signum).name)
                self._notifier.stopping()
                self._shutting_down = True
                self._log.info("daemon_stopping", nodes=len(self._nodes))
                self._request_stop(list(self._nodes.values()), AfterStop.STAY)
            elif signum == signal.SIGHUP and not self._shutting_down:
                self.reload()

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Start all nodes and supervise them until SIGTERM/SIGINT has stopped them all; return the exit code."""
        for spec in self.config.nodes:
            self._nodes[spec.name] = SupervisedNode(spec, NodeFiles.under(self._nodes_dir, spec.name))
        for node in self._in_start_order(self._nodes.values()):
            self._start(node)
        while True:
            self._handle_signals()
            self._reap()
            self._watch_liveness()
            self._advance_stops()
            if self._shutting_down and not any(n.alive or n.stop_requested for n in self._nodes.values()):
                break
            self._promote_ready()
            self._start_due()
            self._announce_ready_once()
            if self._broker is not None and self._broker.keep_up(self._log):
                self._metrics.broker_restarts.inc()
            self._notifier.watchdog()
            self._publish_snapshot()
            self._sleep(self._until_next_due())
        self._publish_snapshot()
        return 0

    def _until_next_due(self) -> float:
        """Sleep until the next tick, or sooner when a restart or a kill is due before it: a restart happens
        ``restart_delay`` after the exit, not up to a tick later."""
        now = time.monotonic()
        due = [n.next_start_at for n in self._nodes.values() if n.state is NodeState.BACKOFF]
        due += [n.stop_deadline for n in self._nodes.values() if n.state is NodeState.STOPPING and not n.killed]
        return max(0.0, min([TICK_S, *(when - now for when in due)]))

    @staticmethod
    def _in_start_order(nodes: Iterable[SupervisedNode]) -> list[SupervisedNode]:
        """Consumers first, so they are subscribed before producers publish."""
        return sorted(nodes, key=lambda n: -NODE_KINDS[n.spec.kind].stage)

    # -- starting --------------------------------------------------------------------------------

    def _launch(self, node: SupervisedNode) -> ChildLaunch:
        spec = node.spec
        host = dataclasses.replace(
            self._host,
            topics={topic: dataclasses.asdict(settings) for topic, settings in spec.topics},
            parent_pid=os.getpid(),
            ready_file=str(node.files.ready),
            heartbeat_file=str(node.files.heartbeat),
            progress_file=str(node.files.progress),
            worker_id=self._worker_ids(spec.name),
        )
        return ChildLaunch(spec.kind, dataclasses.asdict(spec.options), host)

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
        node.files.reset()
        env = dict(os.environ)
        if self._metrics_dir is not None:
            env[METRICS_DIR_ENV] = str(self._metrics_dir)
        env.update({TLS_ENV_PREFIX + key: path for key, path in self.config.redis_tls.items()})
        launch = self._launch(node)
        env.update(launch.environment())
        node.process = subprocess.Popen(launch.argv(), env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        node.past_pids.append(node.process.pid)
        node.started_at = time.time()
        node.started_monotonic = now
        node.hung_reason = None
        node.killed = False
        self._set_state(node, NodeState.STARTING)
        self._log.info("node_starting", node_name=node.spec.name, kind=node.spec.kind, pid=node.process.pid)

    def _promote_ready(self) -> None:
        for node in self._nodes.values():
            if node.state is NodeState.STARTING and node.files.ready.exists():
                self._set_state(node, NodeState.RUNNING)
                self._metrics.up.labels(node.spec.name).set(1)
                self._log.info("node_running", node_name=node.spec.name, pid=node.pid)
            # a node that stayed up for a while has recovered: its next failure backs off from scratch
            uptime_s = time.monotonic() - node.started_monotonic
            if node.state is NodeState.RUNNING and uptime_s > node.spec.restart.restart_delay_max:
                node.consecutive_failures = 0

    def _start_due(self) -> None:
        if self._shutting_down:
            return
        now = time.monotonic()
        for node in self._in_start_order(self._nodes.values()):
            if node.state is NodeState.BACKOFF and now >= node.next_start_at:
                node.restarts += 1
                self._metrics.restarts.labels(node.spec.name).inc()
                self._start(node)

    def _announce_ready_once(self) -> None:
        if self._announced_ready:
            return
        if not any(n.state is NodeState.STARTING for n in self._nodes.values()):
            self._announced_ready = True
            running = sum(n.state is NodeState.RUNNING for n in self._nodes.values())
            self._notifier.ready(f"{running}/{len(self._nodes)} nodes running")
            self._log.info("daemon_ready", running=running, nodes=len(self._nodes))

    # -- exits -----------------------------------------------------------------------------------

    def _reap(self) -> None:
        for node in list(self._nodes.values()):
            if not node.alive:
                continue
            assert node.process is not None
            code = node.process.poll()
            if code is None:
                continue
            if node.state is NodeState.STOPPING:
                self._stopped(node, code)
            else:
                self._on_exit(node, code)

    def _on_exit(self, node: SupervisedNode, code: int) -> None:
        """The node's process died (or was killed as hung): the restart policy decides."""
        self._forget_process(node, code)
        policy = node.spec.restart
        log = self._log.bind(node_name=node.spec.name, exit=node.last_exit)
        if code == EXIT_CONFIG and node.hung_reason is None:
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
        if node.hung_reason is not None:
            node.last_exit = f"hung ({node.hung_reason}); {node.last_exit}"
        self._metrics.up.labels(node.spec.name).set(0)
        if node.process is not None:
            self._metrics.process_dead(node.process.pid)
        node.process = None

    def _fail(self, node: SupervisedNode, reason: str) -> None:
        node.last_exit = reason
        self._set_state(node, NodeState.FAILED)
        self._metrics.up.labels(node.spec.name).set(0)
        self._log.error(
            "node_failed", node_name=node.spec.name, reason=reason, msg=f"node {node.spec.name!r} left down: {reason}"
        )

    def _set_state(self, node: SupervisedNode, state: NodeState) -> None:
        node.transition(state)
        self._metrics.set_state(node.spec.name, state.value, [s.value for s in NodeState])

    # -- liveness ----------------------------------------------------------------------------------

    def _watch_liveness(self) -> None:
        """Kill every node whose main loop stopped beating (stuck in a C call, deadlocked, frozen on a disk);
        its restart policy then restarts it like any dead node. Also exports each node's last progress and
        withholds stale nodes' live gauges."""
        scan = scan_liveness(self._nodes.values(), time.time())
        for node in self._nodes.values():
            if node.last_progress_at is not None:
                self._metrics.last_progress.labels(node.spec.name).set(node.last_progress_at)
        self._metrics.stale_nodes = scan.stale
        for node, age_s in scan.hung:
            self._declare_hung(node, age_s)

    def _declare_hung(self, node: SupervisedNode, age_s: float) -> None:
        assert node.process is not None
        node.hangs += 1
        node.hung_reason = f"no heartbeat for {age_s:.0f} s"
        self._metrics.hangs.labels(node.spec.name).inc()
        self._log.error(
            "node_hung",
            node_name=node.spec.name,
            pid=node.pid,
            heartbeat_age_s=round(age_s, 1),
            liveness_timeout_s=node.spec.options.liveness_timeout_s,
            msg=f"node {node.spec.name!r} has not beaten for {age_s:.0f} s: stack dump on its stderr, then SIGKILL",
        )
        with contextlib.suppress(ProcessLookupError):
            node.process.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack, even if stuck
            node.process.send_signal(signal.SIGCONT)  # a stopped process could not dump it
        node.stop_requested = None
        node.after_stop = AfterStop.POLICY
        node.stop_deadline = time.monotonic() + HANG_DUMP_WAIT_S
        self._set_state(node, NodeState.STOPPING)

    # -- stopping --------------------------------------------------------------------------------

    def _request_stop(
        self, nodes: Iterable[SupervisedNode], after: AfterStop, specs: dict[str, NodeSpec] | None = None
    ) -> None:
        """Ask ``nodes`` to stop; :meth:`_advance_stops` sends the signals in pipeline order (sources first,
        so aggregators flush into still-running dumpers)."""
        for node in nodes:
            if specs is not None:
                node.next_spec = specs.get(node.spec.name)
            if node.state is NodeState.STOPPING:
                if node.after_stop is not AfterStop.POLICY:
                    node.after_stop = after
                continue
            if node.alive:
                node.stop_requested = after
            else:
                self._finish_stop(node, after)

    def _advance_stops(self) -> None:
        now = time.monotonic()
        waiting = [n for n in self._nodes.values() if n.stop_requested is not None]
        stopping_stages = [NODE_KINDS[n.spec.kind].stage for n in self._nodes.values() if n.state is NodeState.STOPPING]
        for node in waiting:
            after = node.stop_requested
            assert after is not None
            stage = NODE_KINDS[node.spec.kind].stage
            earlier = [NODE_KINDS[n.spec.kind].stage for n in waiting if n.alive] + stopping_stages
            if any(s < stage for s in earlier):
                continue  # an upstream node is still stopping: it may still hand this one work
            if not node.alive or node.process is None:
                self._finish_stop(node, after)
                continue
            node.after_stop, node.stop_requested = after, None
            node.stop_deadline = now + self.config.grace_period_s
            self._set_state(node, NodeState.STOPPING)
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
            self._log.info("node_stopping", node_name=node.spec.name, pid=node.pid)
        for node in self._nodes.values():
            if node.state is NodeState.STOPPING and not node.killed and now > node.stop_deadline:
                assert node.process is not None
                node.killed = True
                if node.hung_reason is None:
                    self._log.error(
                        "node_killed",
                        node_name=node.spec.name,
                        pid=node.pid,
                        msg=f"no exit within the {self.config.grace_period_s:g} s grace period",
                    )
                with contextlib.suppress(ProcessLookupError):
                    node.process.kill()

    def _stopped(self, node: SupervisedNode, code: int) -> None:
        """A stopping node's process has exited."""
        if node.after_stop is AfterStop.POLICY:
            self._on_exit(node, code)
            return
        self._forget_process(node, code)
        self._finish_stop(node, node.after_stop)

    def _finish_stop(self, node: SupervisedNode, after: AfterStop) -> None:
        node.stop_requested = None
        if node.state is not NodeState.STOPPED:
            self._set_state(node, NodeState.STOPPED)
        self._log.info("node_stopped", node_name=node.spec.name, exit=node.last_exit)
        if after is AfterStop.REMOVE:
            del self._nodes[node.spec.name]
            node.files.remove()
            self._metrics.forget(node.spec.name, [s.value for s in NodeState], node.past_pids)
        elif after is AfterStop.START and not self._shutting_down:
            if node.next_spec is not None:
                node.spec, node.next_spec = node.next_spec, None
            self._start(node)

    # -- reload ----------------------------------------------------------------------------------

    def reload(self) -> None:
        """Apply a changed config file: restart changed nodes, start new ones, stop removed ones, and retry
        failed ones. Stops proceed in the loop; nothing here waits for a process."""
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
        for section in ("redis_url", "metrics", "web", "logging", "runtime_dir"):
            if getattr(new, section) != getattr(self.config, section):
                self._log.warning(
                    "reload_needs_restart", setting=section, msg=f"{section} changed: restart the daemon to apply it"
                )
        new_specs = {s.name: s for s in new.nodes}
        plan = ReloadPlan.between(self._nodes.values(), new_specs)
        removed, changed, added, retried = plan.removed, plan.changed, plan.added, plan.retried
        self.config = dataclasses.replace(new, redis_url=self.config.redis_url)
        self._request_stop([self._nodes[n] for n in removed], AfterStop.REMOVE)
        for name in changed + retried:
            node = self._nodes[name]
            node.start_times.clear()
            node.consecutive_failures = 0
        self._request_stop([self._nodes[n] for n in changed + retried], AfterStop.START, new_specs)
        new_nodes = [SupervisedNode(new_specs[n], NodeFiles.under(self._nodes_dir, n)) for n in added]
        for node in self._in_start_order(new_nodes):
            self._nodes[node.spec.name] = node
            self._start(node)
        self._log.info("reloaded", changed=changed, added=added, removed=removed, restarted_failed=retried)
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

    def health(self) -> HealthReport:
        """The pipeline's health now, from the last snapshot and the nodes' metrics (disk, uploads).
        Thread-safe (for the control socket and the HTTP listener)."""
        floors = disk_low_thresholds(self.config.nodes, filesystem_bytes)
        return pipeline_health(self._snapshot["nodes"], self._metrics.registry, self.config.nodes, time.time(), floors)

    def status(self) -> dict[str, Any]:
        """``msightd status``'s answer: the snapshot and the health verdict."""
        return {**self._snapshot, "health": self.health().to_json()}
