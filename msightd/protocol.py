"""The contract between the daemon and the node processes it starts, in one place.

A node process is ``python -m msightd.host <node name>`` with a :class:`ChildLaunch` as JSON in the
``MSIGHTD_NODE_LAUNCH`` environment variable (the node's kind, its validated options as a dict, and
:class:`HostSettings`). Not on the command line: the payload holds camera and broker URLs with their
passwords, and any local user can read a process's command line, while its environment is its owner's.
The launch commands build the same :class:`HostSettings` from their flags, so a node runs the same way ad
hoc and supervised. The child rebuilds its options through the same validation as the config file: a
child trusts nothing it is given.

Besides the payload, a child gets two environment variables: ``PROMETHEUS_MULTIPROC_DIR`` (read by
prometheus_client when it is imported, so it cannot travel in the payload) and MSight's
``MSIGHT_REDIS_MESSAGE_BROKER_TLS_*`` file variables (read where MSight reads them).

A node answers through files in the runtime directory that the daemon watches: the ready file appears once
the node is doing its job, the heartbeat file's mtime moves while its main loop turns (liveness), and the
progress file's mtime moves when work gets done (a frame published or received, a segment written).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msightd.bus import DEFAULT_STREAM_MAXLEN, TRANSPORTS
from msightd.logs import LOG_FORMATS, LOG_LEVELS
from msightd.nodes.options import option
from msightd.storage.naming import safe_sensor_name

#: A node's exit codes: done, a failure worth a restart, a configuration no restart can fix.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

CHILD_MODULE = "msightd.host"
LAUNCH_ENV = "MSIGHTD_NODE_LAUNCH"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
TLS_ENV_PREFIX = "MSIGHT_REDIS_MESSAGE_BROKER_"


@dataclass(frozen=True)
class HostSettings:
    """How the hosting process runs a node: its broker, logging, metrics and (under the daemon) the files it
    answers through. Not part of the node's own options. Fields with ``flags`` metadata are the launch
    commands' common flags."""

    redis_url: str | None = option(
        None,
        "broker URL (redis://, rediss://, unix://); default: $MSIGHT_REDIS_URL, then MSight's "
        "MSIGHT_REDIS_MESSAGE_BROKER_* variables, then redis://localhost:6379/0",
    )
    #: Transport of topics not listed in ``topics`` (the launch commands: MSight's pub/sub by default).
    transport: str = option(
        "pubsub", "pubsub (MSight's) or stream (Redis Streams: durable, acknowledged)", choices=TRANSPORTS
    )
    stream_maxlen: int = option(DEFAULT_STREAM_MAXLEN, "entries a stream topic keeps")
    topics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    log_level: str = option("info", "log level", choices=LOG_LEVELS)
    log_format: str = option(
        "auto", "console (MSight's line shape) on a terminal, JSON lines otherwise", choices=LOG_FORMATS
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = option(None, "serve Prometheus /metrics on 127.0.0.1:PORT")
    #: Level of per-frame lines: INFO in the launch commands (as MSight), DEBUG under the daemon.
    frame_log_level: int = logging.INFO
    summary_interval_s: float = 0.0
    # -- under the daemon only -------------------------------------------------------------------
    parent_pid: int | None = None
    ready_file: str | None = None
    heartbeat_file: str | None = None
    progress_file: str | None = None
    #: Where camera nodes leave a thumbnail of their latest frame for the daemon's web page.
    thumbnail_dir: str | None = None
    #: The frame-id worker id, distinct among the daemon's nodes (None: derived from name and pid).
    worker_id: int | None = None

    def validate(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}")
        if self.stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be >= 1, got {self.stream_maxlen}")


#: How often a camera node refreshes its thumbnail while it is wanted (the page reloads them every few seconds).
THUMBNAIL_INTERVAL_S = 2.0
#: Camera nodes make thumbnails only while the web page asked for one within this many seconds: decoding a
#: keyframe for a picture nobody looks at costs a passthrough camera node more than recording does.
THUMBNAIL_DEMAND_S = 30.0


def thumbnail_demand_path(thumbnail_dir: str | Path) -> Path:
    """The file whose modification time says when the web page last wanted a thumbnail (any camera's)."""
    return Path(thumbnail_dir) / ".wanted"


def thumbnail_path(thumbnail_dir: str | Path, sensor_name: str) -> Path:
    """Where a camera node leaves the thumbnail of its latest frame, and where the web page looks for it:
    ``<thumbnail_dir>/<safe sensor name>.jpg`` (sensor names are untrusted, as in segment file names)."""
    return Path(thumbnail_dir) / f"{safe_sensor_name(sensor_name)}.jpg"


@dataclass(frozen=True)
class ChildLaunch:
    """Everything a node process is started with (besides the environment named in the module docstring)."""

    kind: str
    options: Mapping[str, Any]
    host: HostSettings

    def argv(self) -> list[str]:
        """The command line: only the node's name (for ``ps``); the payload goes in :meth:`environment`."""
        return [sys.executable, "-m", CHILD_MODULE, str(self.options.get("name", self.kind))]

    def environment(self) -> dict[str, str]:
        payload = {"kind": self.kind, "options": dict(self.options), "host": dataclasses.asdict(self.host)}
        return {LAUNCH_ENV: json.dumps(payload)}

    @classmethod
    def from_json(cls, text: str) -> ChildLaunch:
        """Raises ValueError (or KeyError/TypeError) on anything that is not a launch payload."""
        payload = json.loads(text)
        if not isinstance(payload, dict) or not isinstance(payload.get("options"), dict):
            raise ValueError("the payload must be a JSON object with kind, options and host")
        return cls(kind=str(payload["kind"]), options=payload["options"], host=HostSettings(**payload["host"]))
