"""The supervisor's own metrics (node up / restarts / state), beside the nodes' aggregated ones."""

from __future__ import annotations

import contextlib
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess

from msightd import __version__
from msightd.metrics import NAMESPACE


class SupervisorMetrics:
    """Lives in the daemon process; ``metrics_dir`` is where the children's multiprocess files are."""

    def __init__(self, metrics_dir: Path | None) -> None:
        self.registry = CollectorRegistry()
        self._metrics_dir = metrics_dir
        if metrics_dir is not None:
            multiprocess.MultiProcessCollector(self.registry, path=str(metrics_dir))
        self.up = Gauge(
            "node_up",
            "1 while the node's process is running and ready.",
            ("node",),
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.restarts = Counter(
            "node_restarts",
            "Restarts of the node by the supervisor.",
            ("node",),
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.state = Gauge(
            "node_state",
            "1 for the node's current supervisor state.",
            ("node", "state"),
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.broker_restarts = Counter(
            "embedded_redis_restarts",
            "Restarts of the embedded redis-server by the daemon.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        Gauge(
            "daemon_build_info",
            "msightd version of the daemon.",
            ("version",),
            namespace=NAMESPACE,
            registry=self.registry,
        ).labels(__version__).set(1)

    def set_state(self, node: str, state: str, all_states: list[str]) -> None:
        for candidate in all_states:
            self.state.labels(node, candidate).set(1 if candidate == state else 0)

    def forget(self, node: str, all_states: list[str], pids: list[int]) -> None:
        """Drop a removed node's series, its own counters included (the files of all its processes),
        so no stale ones stay exported."""
        if self._metrics_dir is not None:
            for pid in pids:
                for path in self._metrics_dir.glob(f"*_{pid}.db"):
                    path.unlink(missing_ok=True)
        with contextlib.suppress(KeyError):
            for candidate in all_states:
                self.state.remove(node, candidate)
            self.up.remove(node)

    def process_dead(self, pid: int) -> None:
        """Remove the live gauges of a dead child; its counters keep counting in the totals."""
        if self._metrics_dir is not None:
            multiprocess.mark_process_dead(pid, str(self._metrics_dir))
