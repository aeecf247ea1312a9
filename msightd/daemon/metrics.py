"""The supervisor's own metrics (node up / restarts / hangs / state / progress), beside the nodes' aggregated
ones.

The nodes' live gauges (frame rates, pending segments) come from their multiprocess files. A node that is
alive but frozen (SIGSTOP, a deadlock) cannot update its files, so its last values would be exported forever:
:class:`LiveNodeFilter` withholds the live gauges of every node the supervisor sees as stale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess
from prometheus_client.metrics_core import Metric

from msightd import __version__
from msightd.metrics import NAMESPACE

#: Gauges a node sets while it runs; a frozen node's values are stale. Counters stay: they only ever were.
LIVE_GAUGES = frozenset({f"{NAMESPACE}_frame_rate_hertz", f"{NAMESPACE}_pending_segments"})


class LiveNodeFilter:
    """Collects the nodes' multiprocess files, leaving out the live gauges of ``owner.stale_nodes``."""

    def __init__(self, metrics_dir: Path, owner: SupervisorMetrics) -> None:
        self._inner = multiprocess.MultiProcessCollector(None, path=str(metrics_dir))
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        stale = self._owner.stale_nodes
        for metric in self._inner.collect():
            if stale and metric.name in LIVE_GAUGES:
                metric.samples = [s for s in metric.samples if s.labels.get("node") not in stale]
            yield metric


class SupervisorMetrics:
    """Lives in the daemon process; ``metrics_dir`` is where the children's multiprocess files are."""

    def __init__(self, metrics_dir: Path | None) -> None:
        self.registry = CollectorRegistry()
        self._metrics_dir = metrics_dir
        #: Nodes alive but not beating: their live gauges are withheld (set by the supervisor every tick).
        self.stale_nodes: set[str] = set()
        if metrics_dir is not None:
            self.registry.register(LiveNodeFilter(metrics_dir, self))
        self.hangs = Counter(
            "node_hangs",
            "Nodes killed because their main loop stopped beating (liveness_timeout_s).",
            ("node",),
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.last_progress = Gauge(
            "node_last_progress_timestamp_seconds",
            "When the node last got work done (a frame published or received, a segment written), Unix time.",
            ("node",),
            namespace=NAMESPACE,
            registry=self.registry,
        )
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
        with contextlib.suppress(KeyError):
            self.last_progress.remove(node)

    def process_dead(self, pid: int) -> None:
        """Remove the live gauges of a dead child; its counters keep counting in the totals."""
        if self._metrics_dir is not None:
            multiprocess.mark_process_dead(pid, str(self._metrics_dir))
