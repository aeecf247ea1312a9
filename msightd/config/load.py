"""A TOML file -> one validated :class:`~msightd.config.model.DaemonConfig`, before anything runs.

Every problem is reported (not just the first) as one line naming the file, the node and the key, and what
is allowed; warnings (legal but suspicious settings) travel with the config.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from msightd.bus import STREAM_MAXLEN, TRANSPORTS
from msightd.bus.router import TopicSettings
from msightd.config.checks import shared_sensor_problems, topic_warnings
from msightd.config.model import (
    DEFAULT_GRACE_PERIOD_S,
    DEFAULT_PERSISTENCE,
    DEFAULT_TRANSPORT,
    PERSISTENCE_MODES,
    TLS_KEYS,
    DaemonConfig,
    LoggingConfig,
    MetricsConfig,
    NodeSpec,
    RestartPolicy,
    WebConfig,
)
from msightd.config.schema import ConfigFileError, accepts, build_options, option_names
from msightd.nodes.kinds import NODE_KINDS

_TOP_LEVEL = ("redis", "metrics", "web", "logging", "daemon", "defaults", "topics", "nodes")
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
    persistence = redis_table.pop("persistence", DEFAULT_PERSISTENCE)
    if persistence not in PERSISTENCE_MODES:
        problems.append(
            f"{where}: [redis] key 'persistence' must be one of {', '.join(PERSISTENCE_MODES)}, got {persistence!r}"
        )
    if redis_url is not None and not (isinstance(redis_url, str) and "://" in redis_url):
        # a URL without its scheme may still carry a password: never echo it
        shown = "a value holding '@' (not shown)" if "@" in str(redis_url) else repr(redis_url)
        problems.append(f"{where}: [redis] key 'url' must be a redis://, rediss:// or unix:// URL, got {shown}")
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
    web = attempt(build_options, WebConfig, section("web"), f"{where}: [web]")
    if metrics and web and metrics.enabled and web.enabled and metrics.port == web.port and web.port:
        problems.append(
            f"{where}: [web] port {web.port} is also [metrics] port: give the web page another port "
            "(default 9465) or set [web] enabled = false"
        )
    logging_config = attempt(build_options, LoggingConfig, section("logging"), f"{where}: [logging]")
    daemon = section("daemon")
    grace = daemon.pop("grace_period_s", DEFAULT_GRACE_PERIOD_S)
    runtime_dir = daemon.pop("runtime_dir", None)
    if not accepts(float, grace) or grace <= 0:
        problems.append(f"{where}: [daemon] key 'grace_period_s' must be a positive number, got {grace!r}")
    if runtime_dir is not None and not isinstance(runtime_dir, str):
        problems.append(f"{where}: [daemon] key 'runtime_dir' must be a string path")
    for key in daemon:
        problems.append(f"{where}: [daemon] unknown key {key!r}; allowed keys: grace_period_s, runtime_dir")

    defaults = section("defaults")
    every_option = set(_RESTART_KEYS)
    for kind in NODE_KINDS.values():
        every_option |= set(option_names(kind.options_class))
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
    problems += shared_sensor_problems(nodes, where)
    if problems:
        raise ConfigFileError(problems)
    publishers = _publishers(nodes)
    nodes = [dataclasses.replace(n, topics=_node_topics(n, topics, transport, publishers)) for n in nodes]
    return DaemonConfig(
        path=where,
        nodes=tuple(nodes),
        redis_url=redis_url,
        redis_tls=redis_tls,
        transport=transport,
        persistence=persistence,
        topics=topics,
        metrics=metrics,
        web=web,
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
    node_keys = set(option_names(kind.options_class))
    merged = {k: v for k, v in defaults.items() if k in node_keys or k in _RESTART_KEYS}
    merged.update({k: v for k, v in raw.items() if k != "kind"})
    restart_raw = {k: merged.pop(k) for k in list(merged) if k in _RESTART_KEYS}
    problems: list[str] = []
    options: Any = None
    restart: Any = None
    try:
        options = build_options(kind.options_class, merged, label)
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
    node: NodeSpec, explicit: Mapping[str, Mapping[str, Any]], transport: str, publishers: Counter[str]
) -> tuple[tuple[str, TopicSettings], ...]:
    """Each topic's settings as this node uses them. An unset maxlen is the payload's per-publisher budget
    times the nodes publishing there: 40 cameras on one frame topic each keep what one camera would. A
    fixed cap shared by all of them let MAXLEN trim entries still pending in the aggregator (a segment's
    worth per camera is in flight), so an aggregator restart, or falling a little behind, lost frames."""
    carried = NODE_KINDS[node.kind].topics(node.options)
    settings = []
    for topic, payload in sorted(carried.items()):
        defaults: dict[str, Any] = {
            "transport": transport,
            "maxlen": STREAM_MAXLEN[payload] * max(1, publishers[topic]),
        }
        settings.append((topic, TopicSettings(**(defaults | dict(explicit.get(topic, {}))))))
    return tuple(settings)


def _publishers(nodes: Sequence[NodeSpec]) -> Counter[str]:
    """How many nodes publish to each topic."""
    return Counter(topic for node in nodes for topic in NODE_KINDS[node.kind].published_topics(node.options))
