"""TOML file → one validated :class:`DaemonConfig`, before anything runs.

The same :func:`build_options` turns launch-command flags and ``[[nodes]]`` tables into a node's config
dataclass, so both paths accept exactly the same options with the same checks. Every problem is
reported (not just the first) as one line naming the file, the node and the key, and what is allowed.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from msightd.bus import TRANSPORTS
from msightd.bus.router import TopicSettings
from msightd.nodes import NODE_KINDS
from msightd.nodes.aggregator import SENSOR_QUEUE_FRAMES
from msightd.nodes.base import ConfigError

TLS_KEYS = ("tls_ca_cert_file", "tls_cert_file", "tls_key_file")
#: The daemon's own pipelines default to durable streams: nothing is lost while a node restarts.
DEFAULT_TRANSPORT = "stream"
#: Stream length bounds per payload: ~1000 frames (100-250 MB at 1280x960 JPEG), ~100 segments (100-300 MB).
DEFAULT_MAXLEN = {"frames": 1000, "segments": 100}
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9464


class ConfigFileError(ValueError):
    """One or more problems in a config file; ``problems`` holds one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class RestartPolicy:
    """When and how fast a node is restarted (systemd's semantics for the start limit)."""

    restart: Literal["always", "on-failure", "never"] = "always"
    restart_delay: float = 1.0
    restart_delay_max: float = 30.0
    start_limit_burst: int = 5
    start_limit_interval: float = 60.0

    def validate(self) -> None:
        if self.restart_delay < 0 or self.restart_delay_max < self.restart_delay:
            raise ConfigError("restart_delay must be >= 0 and restart_delay_max >= restart_delay")
        if self.start_limit_burst < 1 or self.start_limit_interval <= 0:
            raise ConfigError("start_limit_burst must be >= 1 and start_limit_interval > 0")


@dataclass(frozen=True)
class NodeSpec:
    """One ``[[nodes]]`` entry, validated. Equal specs mean an unchanged node on reload."""

    name: str
    kind: str
    options: Any
    restart: RestartPolicy
    #: The node's topics and how each travels (resolved from [redis] transport and [topics]).
    topics: tuple[tuple[str, TopicSettings], ...] = ()


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    summary_interval_s: float = 30.0


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = DEFAULT_METRICS_HOST
    port: int = DEFAULT_METRICS_PORT


PERSISTENCE_MODES = ("aof", "none")


@dataclass(frozen=True)
class DaemonConfig:
    """Everything ``msightd run`` needs. ``redis_url`` None means: start an embedded redis-server."""

    path: str
    nodes: tuple[NodeSpec, ...]
    redis_url: str | None = None
    #: TLS files for a ``rediss://`` url, by MSight's variable suffix (``TLS_CA_CERT_FILE``, ...).
    redis_tls: Mapping[str, str] = field(default_factory=dict)
    transport: str = DEFAULT_TRANSPORT
    #: The embedded broker's: "aof" (an append-only file in the runtime directory: a killed redis-server
    #: comes back with everything) or "none" (memory only).
    persistence: str = "aof"
    #: Explicit [topics.<name>] tables (already validated); nodes carry the resolved settings.
    topics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    grace_period_s: float = 20.0
    runtime_dir: str | None = None
    warnings: tuple[str, ...] = ()


# -- generic dataclass building ------------------------------------------------------------------


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation) if a is not type(None))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        annotation, str(annotation)
    )


def _accepts(annotation: Any, value: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def option_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def build_options(cls: type[Any], raw: Mapping[str, Any], where: str) -> Any:
    """Build ``cls`` from ``raw``, checking names, types and the class's own ``validate()``.

    Raises :class:`ConfigFileError` listing every problem, each prefixed with ``where``.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = []
    for key in raw:
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            problems.append(f"{where}: unknown key {key!r}; allowed keys: {allowed}")
    for name, spec in fields.items():
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if name not in raw:
            if required:
                problems.append(f"{where}: missing key {name!r} ({_describe(hints[name])})")
            continue
        if not _accepts(hints[name], raw[name]):
            problems.append(f"{where}: key {name!r} must be {_describe(hints[name])}, got {raw[name]!r}")
    if problems:
        raise ConfigFileError(problems)
    values = {k: (float(v) if hints[k] is float else v) for k, v in raw.items()}
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:  # ConfigError and the like: one sentence naming the option
            raise ConfigFileError([f"{where}: {exc}"]) from exc
    return instance


# -- the daemon file -----------------------------------------------------------------------------

_TOP_LEVEL = ("redis", "metrics", "logging", "daemon", "defaults", "topics", "nodes")
_RESTART_KEYS = option_names(RestartPolicy)


def load_config(path: str | Path) -> DaemonConfig:
    """Read and validate a daemon config file."""
    where = str(path)
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigFileError([f"{where}: no such file; pass an existing config with -c"]) from None
    except OSError as exc:
        raise ConfigFileError([f"{where}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError([f"{where}: not valid TOML: {exc}"]) from None
    return parse_config(document, where)


def parse_config(document: Mapping[str, Any], where: str) -> DaemonConfig:
    problems: list[str] = []

    def section(name: str) -> dict[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            problems.append(f"{where}: [{name}] must be a table")
            return {}
        return dict(value)

    for key in document:
        if key not in _TOP_LEVEL:
            problems.append(f"{where}: unknown top-level key {key!r}; allowed: {', '.join(_TOP_LEVEL)}")

    def attempt(build: Any, *args: Any) -> Any:
        try:
            return build(*args)
        except ConfigFileError as exc:
            problems.extend(exc.problems)
            return None

    redis_table = section("redis")
    redis_url = redis_table.pop("url", None)
    transport = redis_table.pop("transport", DEFAULT_TRANSPORT)
    persistence = redis_table.pop("persistence", "aof")
    if persistence not in PERSISTENCE_MODES:
        problems.append(
            f"{where}: [redis] key 'persistence' must be one of {', '.join(PERSISTENCE_MODES)}, got {persistence!r}"
        )
    if redis_url is not None and not (isinstance(redis_url, str) and "://" in redis_url):
        problems.append(f"{where}: [redis] key 'url' must be a redis://, rediss:// or unix:// URL, got {redis_url!r}")
    if transport not in TRANSPORTS:
        problems.append(f"{where}: [redis] key 'transport' must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    redis_tls = {}
    for key in TLS_KEYS:
        value = redis_table.pop(key, None)
        if value is not None and not isinstance(value, str):
            problems.append(f"{where}: [redis] key {key!r} must be a file path string")
        elif value is not None:
            redis_tls[key.upper()] = value
    for key in redis_table:
        problems.append(
            f"{where}: [redis] unknown key {key!r}; allowed keys: url (absent = embedded), transport, "
            "persistence, " + ", ".join(TLS_KEYS)
        )

    metrics = attempt(build_options, MetricsConfig, section("metrics"), f"{where}: [metrics]")
    logging_config = attempt(build_options, LoggingConfig, section("logging"), f"{where}: [logging]")
    daemon = section("daemon")
    grace = daemon.pop("grace_period_s", 20.0)
    runtime_dir = daemon.pop("runtime_dir", None)
    if not _accepts(float, grace) or grace <= 0:
        problems.append(f"{where}: [daemon] key 'grace_period_s' must be a positive number, got {grace!r}")
    if runtime_dir is not None and not isinstance(runtime_dir, str):
        problems.append(f"{where}: [daemon] key 'runtime_dir' must be a string path")
    for key in daemon:
        problems.append(f"{where}: [daemon] unknown key {key!r}; allowed keys: grace_period_s, runtime_dir")

    defaults = section("defaults")
    every_option = set(_RESTART_KEYS)
    for kind in NODE_KINDS.values():
        every_option |= set(option_names(kind.config_class))
    for key in defaults:
        if key not in every_option or key == "name":
            problems.append(f"{where}: [defaults] unknown key {key!r}; allowed: restart policy keys and node options")

    topics: dict[str, dict[str, Any]] = {}
    for topic, table in section("topics").items():
        if not isinstance(table, dict):
            problems.append(f"{where}: [topics.{topic}] must be a table with transport and/or maxlen")
            continue
        # unset keys follow the file: [redis] transport, and the payload's maxlen (resolved per node)
        if attempt(build_options, TopicSettings, {"transport": transport, **table}, f"{where}: [topics.{topic}]"):
            topics[topic] = table

    raw_nodes = document.get("nodes", [])
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.append(f"{where}: no [[nodes]] entries; add at least one node")
        raw_nodes = []
    nodes: list[NodeSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_nodes):
        spec = attempt(_parse_node, raw, index, defaults, where)
        if spec is None:
            continue
        if spec.name in seen:
            problems.append(f"{where}: node {spec.name!r}: duplicate name; node names must be unique")
        seen.add(spec.name)
        nodes.append(spec)
    problems += _shared_sensor_problems(nodes, where)
    if problems:
        raise ConfigFileError(problems)
    nodes = [dataclasses.replace(n, topics=_node_topics(n, topics, transport)) for n in nodes]
    return DaemonConfig(
        path=where,
        nodes=tuple(nodes),
        redis_url=redis_url,
        redis_tls=redis_tls,
        transport=transport,
        persistence=persistence,
        topics=topics,
        metrics=metrics,
        logging=logging_config,
        grace_period_s=float(grace),
        runtime_dir=runtime_dir,
        warnings=tuple(topic_warnings(nodes, where)),
    )


def _parse_node(raw: Any, index: int, defaults: Mapping[str, Any], where: str) -> NodeSpec:
    if not isinstance(raw, dict):
        raise ConfigFileError([f"{where}: [[nodes]] entry {index + 1} must be a table"])
    name = raw.get("name")
    label = f"{where}: node {name!r}" if isinstance(name, str) and name else f"{where}: [[nodes]] entry {index + 1}"
    if not isinstance(name, str) or not name:
        raise ConfigFileError([f"{label}: key 'name' must be a non-empty string"])
    kind_name = raw.get("kind")
    if kind_name not in NODE_KINDS:
        raise ConfigFileError([f"{label}: key 'kind' must be one of {', '.join(NODE_KINDS)}, got {kind_name!r}"])
    kind = NODE_KINDS[kind_name]
    node_keys = set(option_names(kind.config_class))
    merged = {k: v for k, v in defaults.items() if k in node_keys or k in _RESTART_KEYS}
    merged.update({k: v for k, v in raw.items() if k != "kind"})
    restart_raw = {k: merged.pop(k) for k in list(merged) if k in _RESTART_KEYS}
    problems: list[str] = []
    options: Any = None
    restart: Any = None
    try:
        options = build_options(kind.config_class, merged, label)
    except ConfigFileError as exc:
        problems.extend(exc.problems)
    try:
        restart = build_options(RestartPolicy, restart_raw, label)
    except ConfigFileError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigFileError(problems)
    return NodeSpec(name=name, kind=kind_name, options=options, restart=restart)


def _node_topics(
    node: NodeSpec, explicit: Mapping[str, Mapping[str, Any]], transport: str
) -> tuple[tuple[str, TopicSettings], ...]:
    carried = NODE_KINDS[node.kind].topics(node.options)
    return tuple(
        (topic, TopicSettings(**{"transport": transport, "maxlen": DEFAULT_MAXLEN[payload], **explicit.get(topic, {})}))
        for topic, payload in sorted(carried.items())
    )


def topic_warnings(nodes: list[NodeSpec], where: str) -> list[str]:
    """Subscribed topics that no node in the file publishes (fine if an outside producer does)."""
    published = {NODE_KINDS[n.kind].published_topic(n.options) for n in nodes}
    warnings = []
    for node in nodes:
        topic = NODE_KINDS[node.kind].subscribed_topic(node.options)
        if topic is not None and topic not in published:
            warnings.append(
                f"{where}: node {node.name!r}: subscribe_topic {topic!r} is published by no node in this file "
                "(fine only if another program publishes it)"
            )
        buffer_size = getattr(node.options, "buffer_size", 0)
        for name, settings in node.topics:
            if settings.transport == "stream" and name == topic and settings.maxlen < 2 * buffer_size:
                warnings.append(
                    f"{where}: topic {name!r}: maxlen {settings.maxlen} is under twice node {node.name!r}'s "
                    f"buffer_size ({buffer_size}); unacknowledged frames may be trimmed before they are encoded"
                )
    return warnings + _frame_ring_warnings(nodes, where)


def _shared_sensor_problems(nodes: list[NodeSpec], where: str) -> list[str]:
    """Two sources publishing one sensor name to one topic: consumers would merge both cameras into one
    sensor's segments, and with shared-memory frames both would write the same ring."""
    owners: dict[tuple[str, str], str] = {}
    problems = []
    for node in nodes:
        sensor = getattr(node.options, "sensor_name", None)
        if not isinstance(sensor, str):
            continue
        key = (node.options.publish_topic, sensor)
        if key in owners:
            problems.append(
                f"{where}: node {node.name!r}: sensor_name {sensor!r} is already published to {key[0]!r} by node "
                f"{owners[key]!r}; give every camera its own sensor_name"
            )
        owners.setdefault(key, node.name)
    return problems


def _frame_ring_warnings(nodes: list[NodeSpec], where: str) -> list[str]:
    """Shared-memory producers whose ring is smaller than what a consumer of their topic holds (frames
    would go as JPEG all the time), or whose consumers look in another directory (every frame lost)."""
    warnings = []
    for producer in nodes:
        options = producer.options
        if getattr(options, "frame_encoding", None) != "shm":
            continue
        for consumer in nodes:
            if NODE_KINDS[consumer.kind].subscribed_topic(consumer.options) != options.publish_topic:
                continue
            held = getattr(consumer.options, "buffer_size", 0) + SENSOR_QUEUE_FRAMES
            if options.shm_slots <= held:
                warnings.append(
                    f"{where}: node {producer.name!r}: shm_slots {options.shm_slots} is not above what node "
                    f"{consumer.name!r} holds ({held} frames); most frames would go as JPEG"
                )
            if getattr(consumer.options, "shm_dir", options.shm_dir) != options.shm_dir:
                warnings.append(
                    f"{where}: node {producer.name!r} writes frames to {options.shm_dir} but node "
                    f"{consumer.name!r} reads them from {consumer.options.shm_dir}; give both the same shm_dir"
                )
    return warnings
