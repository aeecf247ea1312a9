"""CPU and memory of the measured processes, read from ``/proc``.

A node's cost includes whatever it spawned, so CPU is counted over a process tree: utime+stime of the process
(all threads), of its reaped children and of its live descendants. The daemon reaps the nodes out of our reach,
so a thread keeps every process's last CPU reading fresh: when a node exits, its CPU is known to within one
sampling interval. Marks name instants (``base`` once every node runs, ``t0`` after the warm-up, ``t1`` at the
end of the run) so that costs are differences between two readings of the same process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL_S = 0.5
SHUTDOWN_SAMPLE_INTERVAL_S = 0.05
#: PSS walks every page table of a process: read it less often than RSS (40 cameras are 45 processes).
PSS_SAMPLE_INTERVAL_S = 5.0


def _children(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                children += [int(c) for c in Path(task.path, "children").read_text().split()]
    return children


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants: a node's CPU includes whatever it spawned."""
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        pending += _children(current)
    return pids


def _own_cpu_seconds(pid: int, reaped_children: bool = True) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields after it are fixed
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + ((cutime + cstime) if reaped_children else 0)) / CLK_TCK


def cpu_seconds(pid: int, tree: bool = True) -> float | None:
    """CPU time of ``pid`` (all threads) plus, with ``tree``, its reaped children and live descendants; None
    once it is gone. The daemon is measured without its tree: its descendants are the nodes, measured apart."""
    own = _own_cpu_seconds(pid, reaped_children=tree)
    if own is None or not tree:
        return own
    return own + sum(_own_cpu_seconds(child) or 0.0 for child in _tree(pid)[1:])


def _proc_bytes(pid: int, tree: bool, file: str, key: str) -> int:
    """The kB figure ``key`` of ``/proc/<pid>/<file>``, summed over ``pid`` and, with ``tree``, its descendants."""
    total = 0
    for member in _tree(pid) if tree else [pid]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/{file}").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def rss_bytes(pid: int, tree: bool = True) -> int:
    """Resident memory of ``pid`` and, with ``tree``, its descendants (VmRSS; 0 once gone)."""
    return _proc_bytes(pid, tree, "status", "VmRSS:")


def pss_bytes(pid: int, tree: bool = True) -> int:
    """Proportional set size of ``pid`` and, with ``tree``, its descendants (0 once gone): each shared page
    (libraries, a frame ring mapped by camera and aggregator) counted once across the processes sharing it,
    so summing the pipeline's PSS gives the memory it really takes, which summing RSS overstates."""
    return _proc_bytes(pid, tree, "smaps_rollup", "Pss:")


@dataclass
class Tracked:
    """What the sampler knows about one process: CPU at named marks, CPU when last seen alive, peak RSS."""

    label: str
    pid: int
    tree: bool = True
    marks: dict[str, float] = field(default_factory=dict)
    last_cpu: float | None = None
    max_rss: int = 0
    max_pss: int = 0


def window_cpu(tracked: Tracked, start: str, end: str) -> float | None:
    """CPU seconds between two marks; None if the process was gone at either (no guess in the results)."""
    if start in tracked.marks and end in tracked.marks:
        return tracked.marks[end] - tracked.marks[start]
    return None


def lifetime_cpu(tracked: Tracked) -> float | None:
    """CPU seconds from the ``base`` mark to the last reading (the exit, for a process that has stopped)."""
    if "base" in tracked.marks and tracked.last_cpu is not None:
        return tracked.last_cpu - tracked.marks["base"]
    return None


class Sampler:
    """Samples CPU and RSS of tracked processes from a background thread.

    The thread keeps ``last_cpu`` fresh so that the CPU of a process that has exited (and been reaped by the
    daemon, out of our reach) is known to within one sampling interval; :meth:`fast` shortens that interval
    while processes are stopping.
    """

    def __init__(self) -> None:
        self._tracked: dict[str, Tracked] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = SAMPLE_INTERVAL_S
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def track(self, label: str, pid: int, tree: bool = True) -> None:
        with self._lock:
            self._tracked[label] = Tracked(label, pid, tree)
        self._sample(self._tracked[label])

    def get(self, label: str) -> Tracked:
        return self._tracked[label]

    def labels(self) -> list[str]:
        return list(self._tracked)

    def mark(self, name: str) -> None:
        """Record every tracked process's CPU now, under ``name``."""
        with self._lock:
            for tracked in self._tracked.values():
                cpu = cpu_seconds(tracked.pid, tracked.tree)
                if cpu is not None:
                    tracked.marks[name] = cpu
                    tracked.last_cpu = cpu

    def fast(self) -> None:
        self._interval = SHUTDOWN_SAMPLE_INTERVAL_S

    def _sample(self, tracked: Tracked) -> None:
        cpu = cpu_seconds(tracked.pid, tracked.tree)
        if cpu is not None:
            tracked.last_cpu = cpu
            tracked.max_rss = max(tracked.max_rss, rss_bytes(tracked.pid, tracked.tree))

    def _run(self) -> None:
        last_rss = last_pss = 0.0
        while not self._stop.wait(self._interval):
            with self._lock:
                rss_due = time.monotonic() - last_rss >= 1.0 - SHUTDOWN_SAMPLE_INTERVAL_S
                pss_due = time.monotonic() - last_pss >= PSS_SAMPLE_INTERVAL_S
                for tracked in self._tracked.values():
                    cpu = cpu_seconds(tracked.pid, tracked.tree)
                    if cpu is None:
                        continue
                    tracked.last_cpu = cpu
                    if rss_due:
                        tracked.max_rss = max(tracked.max_rss, rss_bytes(tracked.pid, tracked.tree))
                    if pss_due:
                        tracked.max_pss = max(tracked.max_pss, pss_bytes(tracked.pid, tracked.tree))
                if rss_due:
                    last_rss = time.monotonic()
                if pss_due:
                    last_pss = time.monotonic()
