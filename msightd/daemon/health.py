"""Is the pipeline recording? One verdict for ``/healthz`` and ``msightd status``, from what the daemon knows.

Pure logic over plain data: no cv2/av/numpy, no config or node modules, no I/O, no clock of its own (the
caller passes ``now``), so the daemon can call it on every request and tests can feed it any situation.

Inputs
------
``snapshots``: one dict per node, as ``SupervisedNode.snapshot()`` makes them::

    name         str    the node's name
    kind         str    its kind (``rtsp``, ``image_to_video_aggregator``, ``video_local_dumper``, ...)
    state        str    supervisor state: starting | running | backoff | stopping | stopped | exited | failed
    pid          int | None     set while the process is alive (starting, running, stopping)
    uptime_s     float | None   seconds since the current process started (None when not alive)
    last_exit    str | None     how the last process ended; "hung ..." when the liveness check killed it
    last_progress_at  float | None  epoch seconds of the node's last progress (a frame published by a
                                    camera, received by an aggregator, a segment written by a dumper); None
                                    if it made none yet. Kept across restarts of the node.
    storage_free_bytes          float | None  (optional) free bytes where the node writes
    upload_oldest_pending_age_s float | None  (optional) age of the oldest segment not yet uploaded
    save_dir_usable             float | None  (optional) 0 while a dumper's save directory is unusable

The optional readings are what the nodes export as ``msightd_storage_free_bytes``,
``msightd_upload_oldest_pending_age_seconds`` and ``msightd_save_dir_usable``; :func:`readings_from_metrics`
picks them out of the metric families the daemon already aggregates for ``/metrics``, and
:func:`with_readings` adds them to snapshots.

``expectations``: per node name, a :class:`NodeExpectation` (what a healthy node does), normally from
:func:`expectations_for` over the configured node specs. A node without one is judged by its state only.

Problems (``Problem.problem``, stable names for scripts): ``failed``, ``exited``, ``hung``, ``backoff``,
``not_running`` (stopping/stopped), ``not_ready`` (starting for too long), ``camera_silent``,
``no_segments``, ``no_progress`` (any other kind with a progress limit), ``disk_low``,
``upload_backlog_old``, ``save_dir_unusable``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

#: A camera that delivered no frame for this long is reported (its node reconnects on its own meanwhile).
DEFAULT_CAMERA_SILENCE_S = 30.0
#: A dumper is reported after this many expected segment intervals without writing a segment.
SEGMENT_INTERVALS_WITHOUT_WRITE = 3
#: An upload backlog whose oldest segment is older than this is reported.
DEFAULT_UPLOAD_MAX_AGE_S = 3600.0
#: A node still not ready after this long is reported (a camera's own silence limit applies first).
DEFAULT_STARTING_GRACE_S = 60.0

RTSP_KIND = "rtsp"
DUMPER_KIND = "video_local_dumper"
UPLOADER_KIND = "video_s3_uploader"
#: What "no progress" means for each kind, named as the problem a person reads.
_PROGRESS_PROBLEM = {RTSP_KIND: "camera_silent", DUMPER_KIND: "no_segments"}

_STATE_PROBLEMS = {
    "failed": "failed",
    "exited": "exited",
    "backoff": "backoff",
    "stopping": "not_running",
    "stopped": "not_running",
}


@dataclass(frozen=True)
class NodeExpectation:
    """What a healthy node does. ``None`` switches a check off."""

    kind: str
    #: Longest acceptable time without progress (camera: without a frame; dumper: without a segment).
    progress_within_s: float | None = None
    #: Free bytes below which the node's disk is reported (its configured free-space floor).
    min_free_bytes: float | None = None
    #: Oldest acceptable segment waiting for upload, in seconds.
    upload_max_age_s: float | None = None
    starting_grace_s: float = DEFAULT_STARTING_GRACE_S


@dataclass(frozen=True)
class Problem:
    node: str
    problem: str
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """The verdict: ``ok`` when no node has a problem. ``to_json()`` is the ``/healthz`` body."""

    checked_at: float
    nodes: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def http_status(self) -> int:
        """200 when healthy, 503 otherwise (what load balancers and uptime checkers expect)."""
        return 200 if self.ok else 503

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": "ok" if self.ok else "unhealthy",
            "checked_at": round(self.checked_at, 3),
            "nodes": self.nodes,
            "problems": [asdict(problem) for problem in self.problems],
        }


class _NodeSpecLike(Protocol):
    """A configured node (``NodeSpec``): read-only, as frozen dataclasses are."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def options(self) -> Any: ...


def segment_interval_s(options: Any) -> float | None:
    """Seconds between two segments of a producer whose options have ``buffer_size`` and ``fps``."""
    buffer_size = getattr(options, "buffer_size", None)
    fps = getattr(options, "fps", None)
    if not buffer_size or not fps:
        return None
    return float(buffer_size) / float(fps)


def expectations_for(
    specs: Iterable[_NodeSpecLike],
    *,
    camera_silence_s: float = DEFAULT_CAMERA_SILENCE_S,
    upload_max_age_s: float = DEFAULT_UPLOAD_MAX_AGE_S,
    min_free_bytes: Mapping[str, float] | None = None,
) -> dict[str, NodeExpectation]:
    """Expectations from the configured node specs (``name``, ``kind``, ``options``).

    A dumper expects a segment every ``buffer_size / fps`` seconds of the segment producers publishing to
    its topic (the slowest, if several: any of them keeps it writing) and is reported after
    :data:`SEGMENT_INTERVALS_WITHOUT_WRITE` of those; without a producer in the config (segments come
    from another program) it has no progress limit. ``min_free_bytes``: per node name, the free-space
    floor in bytes (the caller resolves percentages against the filesystem).
    """
    specs = list(specs)
    floors = min_free_bytes or {}
    intervals_by_topic: dict[str, float] = {}
    for spec in specs:
        interval = segment_interval_s(spec.options)
        topic = getattr(spec.options, "publish_topic", None)
        if interval is not None and topic:
            intervals_by_topic[topic] = max(interval, intervals_by_topic.get(topic, 0.0))
    expectations = {}
    for spec in specs:
        progress_within_s: float | None = None
        if spec.kind == RTSP_KIND:
            progress_within_s = camera_silence_s
        elif spec.kind == DUMPER_KIND:
            interval = intervals_by_topic.get(getattr(spec.options, "subscribe_topic", ""))
            progress_within_s = SEGMENT_INTERVALS_WITHOUT_WRITE * interval if interval is not None else None
        expectations[spec.name] = NodeExpectation(
            kind=spec.kind,
            progress_within_s=progress_within_s,
            min_free_bytes=floors.get(spec.name),
            upload_max_age_s=upload_max_age_s if spec.kind == UPLOADER_KIND else None,
        )
    return expectations


def evaluate(
    snapshots: Iterable[Mapping[str, Any]], expectations: Mapping[str, NodeExpectation], now: float
) -> HealthReport:
    """Every problem of every node (see the module docstring for the inputs); ``now`` in epoch seconds."""
    snapshots = list(snapshots)
    problems: list[Problem] = []
    for snapshot in snapshots:
        expectation = expectations.get(snapshot["name"])
        problems += _state_problems(snapshot, expectation)
        if expectation is not None:
            problems += _progress_problems(snapshot, expectation, now)
            problems += _resource_problems(snapshot, expectation)
    return HealthReport(checked_at=now, nodes=len(snapshots), problems=problems)


def _state_problems(snapshot: Mapping[str, Any], expectation: NodeExpectation | None) -> list[Problem]:
    name, state, last_exit = snapshot["name"], snapshot["state"], snapshot.get("last_exit")
    hung = isinstance(last_exit, str) and last_exit.startswith("hung")
    if hung and state in ("backoff", "starting"):
        return [Problem(name, "hung", f"{last_exit}; restarting")]
    if state in _STATE_PROBLEMS:
        since = f": {last_exit}" if last_exit else ""
        return [Problem(name, _STATE_PROBLEMS[state], f"node is {state}{since}")]
    grace_s = expectation.starting_grace_s if expectation else DEFAULT_STARTING_GRACE_S
    uptime_s = snapshot.get("uptime_s")
    if state == "starting" and uptime_s is not None and uptime_s > grace_s:
        return [Problem(name, "not_ready", f"starting for {uptime_s:.0f} s, not ready (limit {grace_s:g} s)")]
    return []


def _progress_problems(snapshot: Mapping[str, Any], expectation: NodeExpectation, now: float) -> list[Problem]:
    """Only for a live process: a dead one is already reported by its state."""
    limit_s = expectation.progress_within_s
    if limit_s is None or snapshot.get("pid") is None:
        return []
    last = snapshot.get("last_progress_at")
    uptime_s = snapshot.get("uptime_s")
    if last is not None:
        idle_s, since = now - float(last), "since its last"
    elif uptime_s is not None:
        idle_s, since = float(uptime_s), "since it started, and none yet"
    else:
        return []
    if idle_s <= limit_s:
        return []
    problem = _PROGRESS_PROBLEM.get(expectation.kind, "no_progress")
    what = {"camera_silent": "frame", "no_segments": "segment written"}.get(problem, "progress")
    return [Problem(snapshot["name"], problem, f"no {what} for {idle_s:.0f} s {since} (limit {limit_s:g} s)")]


def _resource_problems(snapshot: Mapping[str, Any], expectation: NodeExpectation) -> list[Problem]:
    name = snapshot["name"]
    found = []
    if snapshot.get("save_dir_usable") == 0:
        found.append(
            Problem(
                name,
                "save_dir_unusable",
                "its save directory is missing, unwritable or not mounted: segments wait (its save_dir_unusable "
                "log line says why)",
            )
        )
    free = snapshot.get("storage_free_bytes")
    if expectation.min_free_bytes is not None and free is not None and free < expectation.min_free_bytes:
        found.append(
            Problem(name, "disk_low", f"{_gb(free)} free, below the floor of {_gb(expectation.min_free_bytes)}")
        )
    age_s = snapshot.get("upload_oldest_pending_age_s")
    if expectation.upload_max_age_s is not None and age_s is not None and age_s > expectation.upload_max_age_s:
        found.append(
            Problem(
                name,
                "upload_backlog_old",
                f"oldest segment waiting for upload is {age_s:.0f} s old (limit {expectation.upload_max_age_s:g} s)",
            )
        )
    return found


def _gb(size_bytes: float) -> str:
    return f"{size_bytes / 1e9:.2f} GB"


# -- readings from the aggregated metrics --------------------------------------------------------------

#: metric sample name -> (snapshot key, how several samples of one node combine)
_READINGS = {
    "msightd_storage_free_bytes": ("storage_free_bytes", min),
    "msightd_upload_oldest_pending_age_seconds": ("upload_oldest_pending_age_s", max),
    "msightd_save_dir_usable": ("save_dir_usable", min),
}


def readings_from_metrics(families: Iterable[Any]) -> dict[str, dict[str, float]]:
    """{node: {snapshot key: value}} from prometheus_client metric families (``registry.collect()``):
    the lowest free space and the oldest upload backlog each node reports."""
    readings: dict[str, dict[str, float]] = {}
    for family in families:
        for sample in family.samples:
            known = _READINGS.get(sample.name)
            node = sample.labels.get("node")
            if known is None or node is None:
                continue
            key, combine = known
            per_node = readings.setdefault(node, {})
            per_node[key] = combine(per_node[key], sample.value) if key in per_node else sample.value
    return readings


def with_readings(
    snapshots: Iterable[Mapping[str, Any]], readings: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """Copies of ``snapshots`` with each node's readings added."""
    return [{**snapshot, **readings.get(snapshot["name"], {})} for snapshot in snapshots]


def pipeline_health(
    snapshots: Iterable[Mapping[str, Any]],
    registry: Any,
    specs: Iterable[_NodeSpecLike],
    now: float,
    min_free_bytes: Mapping[str, float] | None = None,
) -> HealthReport:
    """The daemon's verdict: node snapshots plus the readings in its aggregated metrics ``registry``."""
    readings = readings_from_metrics(registry.collect())
    return evaluate(with_readings(snapshots, readings), expectations_for(specs, min_free_bytes=min_free_bytes), now)


def disk_low_thresholds(specs: Iterable[_NodeSpecLike], filesystem_bytes: Any) -> dict[str, float]:
    """Per dumper with a ``min_free_space`` floor: the free space under which its disk is reported, half the
    floor. Retention holds free space right at the floor (deleting the oldest as segments arrive), so the floor
    itself would flap; under half of it retention is not keeping up (segments it may not delete, not yet
    uploaded, or other files filling the disk). ``filesystem_bytes(save_dir)`` gives the size the percentage
    floors are taken of (None when the directory cannot be read: no threshold then)."""
    from msightd.storage.sizes import parse_space_floor

    thresholds = {}
    for spec in specs:
        floor = getattr(spec.options, "min_free_space", None)
        if floor is None:
            continue
        size = filesystem_bytes(spec.options.save_dir)
        if size is not None:
            thresholds[spec.name] = parse_space_floor(floor).bytes_for(size) / 2
    return thresholds
