"""One node's process life as an explicit state machine (supervisor's ``process.py`` is the model).

Every state change goes through :meth:`SupervisedNode.transition`, which refuses one the table does not
allow: a bug in the supervisor shows up as an error naming both states, not as a node silently in the wrong
state. Stopping is a state with a deadline that the supervisor's loop advances (SIGTERM, then SIGKILL once
the deadline passes), never a wait inside the loop, so one slow node cannot freeze the supervision of others.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msightd.config.model import NodeSpec


class NodeState(enum.Enum):
    STOPPED = "stopped"  # not running, and not meant to be (never started, or stopped on purpose)
    STARTING = "starting"  # process started, not yet ready
    RUNNING = "running"  # ready (subscribed / source opened)
    BACKOFF = "backoff"  # exited; waiting to be restarted
    STOPPING = "stopping"  # asked to exit (SIGTERM, or SIGKILL for a hung node), waiting for it
    EXITED = "exited"  # exited and the policy says leave it down
    FAILED = "failed"  # start limit hit, or bad configuration: left down until reload


_ALLOWED: dict[NodeState, frozenset[NodeState]] = {
    NodeState.STOPPED: frozenset({NodeState.STARTING, NodeState.FAILED}),
    NodeState.STARTING: frozenset({NodeState.RUNNING, NodeState.BACKOFF, NodeState.EXITED, NodeState.FAILED,
                                   NodeState.STOPPING}),
    NodeState.RUNNING: frozenset({NodeState.BACKOFF, NodeState.EXITED, NodeState.FAILED, NodeState.STOPPING}),
    NodeState.BACKOFF: frozenset({NodeState.STARTING, NodeState.STOPPED, NodeState.FAILED}),
    NodeState.STOPPING: frozenset({NodeState.STOPPED, NodeState.BACKOFF, NodeState.EXITED, NodeState.FAILED}),
    NodeState.EXITED: frozenset({NodeState.STARTING, NodeState.STOPPED}),
    NodeState.FAILED: frozenset({NodeState.STARTING, NodeState.STOPPED}),
}  # fmt: skip
#: States in which the node's process may be alive.
LIVE_STATES = frozenset({NodeState.STARTING, NodeState.RUNNING, NodeState.STOPPING})


class AfterStop(enum.Enum):
    """What happens once a stopping node's process has exited."""

    STAY = "stay"  # STOPPED (daemon shutdown)
    START = "start"  # start it again with its (new) spec (reload of a changed node)
    REMOVE = "remove"  # forget it (reload removed it)
    POLICY = "policy"  # as if it had died: the restart policy decides (a hung node)


class InvalidTransition(RuntimeError):
    pass


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


@dataclass(frozen=True)
class NodeFiles:
    """The files a node answers through (see :mod:`msightd.protocol`), in the runtime directory."""

    ready: Path
    heartbeat: Path
    progress: Path

    @classmethod
    def under(cls, directory: Path, node_name: str) -> NodeFiles:
        return cls(*(directory / f"{node_name}.{suffix}" for suffix in ("ready", "heartbeat", "progress")))

    def reset(self) -> None:
        """Before a start: no readiness yet, heartbeat and progress start now (startup counts against the
        liveness timeout)."""
        self.ready.parent.mkdir(parents=True, exist_ok=True)
        self.ready.unlink(missing_ok=True)
        for path in (self.heartbeat, self.progress):
            with open(path, "w"):
                pass

    def remove(self) -> None:
        for path in (self.ready, self.heartbeat, self.progress):
            path.unlink(missing_ok=True)


def mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


@dataclass
class SupervisedNode:
    """One node's process life. Mutated only by the supervisor's main loop."""

    spec: NodeSpec
    files: NodeFiles
    state: NodeState = NodeState.STOPPED
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # wall clock, for uptime
    started_monotonic: float = 0.0
    restarts: int = 0
    hangs: int = 0
    consecutive_failures: int = 0
    last_exit: str | None = None
    next_start_at: float = 0.0
    start_times: deque[float] = field(default_factory=deque)
    past_pids: list[int] = field(default_factory=list)  # whose metrics files are this node's
    # -- stopping --------------------------------------------------------------------------------
    stop_requested: AfterStop | None = None  # asked to stop, waiting for its turn (pipeline order)
    after_stop: AfterStop = AfterStop.STAY
    stop_deadline: float = 0.0  # monotonic; SIGKILL after it
    killed: bool = False
    next_spec: NodeSpec | None = None  # the spec to start with once stopped (reload)
    hung_reason: str | None = None
    # -- what the node reports ---------------------------------------------------------------------
    last_heartbeat_at: float | None = None  # wall clock, from the heartbeat file's mtime
    last_progress_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.state in LIVE_STATES

    def transition(self, new: NodeState) -> None:
        if new not in _ALLOWED[self.state]:
            raise InvalidTransition(f"node {self.spec.name!r}: {self.state.value} -> {new.value} is not allowed")
        self.state = new

    def read_reports(self) -> None:
        """Refresh heartbeat and progress times from the node's files."""
        self.last_heartbeat_at = mtime(self.files.heartbeat)
        progress = mtime(self.files.progress)
        # the file is created at start; only a touch after that is progress
        if progress is not None and progress > self.started_at + 1e-3:
            self.last_progress_at = progress

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "state": self.state.value,
            "pid": self.pid if self.alive else None,
            "uptime_s": round(now - self.started_at, 1) if self.alive else None,
            "restarts": self.restarts,
            "hangs": self.hangs,
            "last_exit": self.last_exit,
            "restart_policy": self.spec.restart.restart,
            "last_heartbeat_at": self.last_heartbeat_at if self.alive else None,
            "last_progress_at": self.last_progress_at,
        }


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload does to each node, by name: stop and forget, stop and start with the new spec, start,
    or start again (failed or exited nodes whose spec did not change)."""

    removed: list[str]
    changed: list[str]
    added: list[str]
    retried: list[str]

    @classmethod
    def between(cls, nodes: Iterable[SupervisedNode], new_specs: Mapping[str, NodeSpec]) -> ReloadPlan:
        current = {node.spec.name: node for node in nodes}
        spec_of = {name: node.next_spec or node.spec for name, node in current.items()}
        changed = [name for name in spec_of if name in new_specs and new_specs[name] != spec_of[name]]
        return cls(
            removed=[name for name in spec_of if name not in new_specs],
            changed=changed,
            added=[name for name in new_specs if name not in spec_of],
            retried=[
                name
                for name in spec_of
                if name in new_specs and name not in changed
                and current[name].state in (NodeState.FAILED, NodeState.EXITED)
            ],
        )  # fmt: skip
