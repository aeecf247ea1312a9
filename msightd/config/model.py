"""The daemon's configuration as typed, frozen dataclasses, with every default written once here.

Built from a TOML file by :mod:`msightd.config.load`; equal :class:`NodeSpec` values mean an unchanged node
on reload. Node options themselves are in :mod:`msightd.nodes.options`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from msightd.bus.router import TopicSettings
from msightd.nodes.options import ConfigError

TLS_KEYS = ("tls_ca_cert_file", "tls_cert_file", "tls_key_file")
#: The daemon's own pipelines default to durable streams: nothing is lost while a node restarts.
DEFAULT_TRANSPORT = "stream"
PERSISTENCE_MODES = ("aof", "none")
DEFAULT_PERSISTENCE = "aof"
DEFAULT_GRACE_PERIOD_S = 20.0


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
    host: str = "127.0.0.1"
    port: int = 9464


#: A web token: URL- and cookie-safe characters, long enough not to be guessed.
_WEB_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")


@dataclass(frozen=True)
class WebConfig:
    """The status page, API and segment files (``msightd.daemon.web``): loopback only unless told."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9465
    #: When set, every request must carry it (bearer header, cookie, or ``?token=`` once).
    token: str | None = None

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.token is not None and not _WEB_TOKEN.fullmatch(self.token):
            raise ConfigError(
                "token must be 16 to 256 of the characters A-Z a-z 0-9 . _ ~ + / = - "
                "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )


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
    persistence: str = DEFAULT_PERSISTENCE
    #: Explicit [topics.<name>] tables (already validated); nodes carry the resolved settings.
    topics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    grace_period_s: float = DEFAULT_GRACE_PERIOD_S
    runtime_dir: str | None = None
    warnings: tuple[str, ...] = ()
