"""Which supervised nodes are hung, and which have stale live gauges, from their heartbeat files.

A node's main loop touches its heartbeat file (at most once a second, :class:`msightd.nodes.runtime.Pulse`);
a frozen process looks alive to ``waitpid``, so the file's age is the only witness. Gunicorn's arbiter does
the same with a temp file per worker (``murder_workers``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from msightd.daemon.process import NodeState, SupervisedNode

#: A live node whose heartbeat is older than this has its live gauges (frame rates) withheld from /metrics:
#: long enough for a camera read that blocks up to its read timeout, short enough to be honest within a scrape.
STALE_GAUGE_S = 5.0


@dataclass
class LivenessScan:
    hung: list[tuple[SupervisedNode, float]] = field(default_factory=list)  # node, heartbeat age in seconds
    stale: set[str] = field(default_factory=set)


def scan_liveness(nodes: Iterable[SupervisedNode], now: float) -> LivenessScan:
    """Refresh each node's heartbeat and progress times; ``hung``: starting or running nodes silent for longer
    than their ``liveness_timeout_s`` (0: never)."""
    scan = LivenessScan()
    for node in nodes:
        node.read_reports()
        if node.state not in (NodeState.STARTING, NodeState.RUNNING) or node.last_heartbeat_at is None:
            continue
        age_s = now - node.last_heartbeat_at
        if age_s > STALE_GAUGE_S:
            scan.stale.add(node.spec.name)
        timeout_s = node.spec.options.liveness_timeout_s
        if timeout_s and age_s > timeout_s:
            scan.hung.append((node, age_s))
    return scan
