"""The daemon's HTTP side, wired from its configuration: the metrics listener (``/metrics``, ``/healthz``)
and the web listener (pages, API, files), started and closed together by the composition root.

The web's view of the nodes follows the supervisor's current configuration on every request, so a reload
that adds a camera or a dumper shows on the next page load; the listeners' own settings need a restart.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from msightd.config.model import DaemonConfig
from msightd.daemon.web.catalogs import CatalogReaders, SubprocessExporter
from msightd.daemon.web.http import HttpServer
from msightd.daemon.web.server import metrics_server, web_server
from msightd.daemon.web.site import Archive, Camera, SiteLayout, WebSources
from msightd.nodes.kinds import NODE_KINDS
from msightd.protocol import thumbnail_path

Health = Callable[[], tuple[int, dict[str, Any]]]


class ListenError(Exception):
    """A listener cannot bind its address; the message says which and what to change."""


def site_layout(config: DaemonConfig, thumbnail_dir: Path) -> SiteLayout:
    """Cameras are the source nodes (they publish frames and subscribe to nothing); archives are the nodes
    with a ``save_dir``, named after the node."""
    cameras = []
    archives = []
    for spec in config.nodes:
        kind = NODE_KINDS.get(spec.kind)
        sensor = getattr(spec.options, "sensor_name", None)
        if kind is not None and kind.subscribes is None and kind.publishes and kind.publishes[1] == "frames" and sensor:
            cameras.append(Camera(spec.name, sensor, thumbnail_path(thumbnail_dir, sensor).name))
        save_dir = getattr(spec.options, "save_dir", None)
        if isinstance(save_dir, str) and save_dir:
            archives.append(Archive(spec.name, Path(save_dir).absolute()))
    return SiteLayout(tuple(cameras), tuple(archives), thumbnail_dir)


class HttpListeners:
    """Both listeners of one daemon (each only when enabled). ``start`` raises :class:`ListenError`."""

    def __init__(
        self,
        config: Callable[[], DaemonConfig],
        status: Callable[[], dict[str, Any]],
        health: Health,
        registry: CollectorRegistry,
        thumbnail_dir: Path,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._log = log
        self._catalogs = CatalogReaders()
        self._servers: list[HttpServer] = []
        settings = config()
        if settings.metrics.enabled:
            self._servers.append(
                metrics_server(settings.metrics.host, settings.metrics.port, registry, log, health=health)
            )
        if settings.web.enabled:
            sources = WebSources(
                status=status,
                layout=lambda: site_layout(config(), thumbnail_dir),
                open_index=self._catalogs.get,
                registry=registry,
                health=health,
                exporter=SubprocessExporter(),
                export_tmp_dir=Path(tempfile.gettempdir()),
            )
            self._servers.append(web_server(settings.web.host, settings.web.port, settings.web.token, sources, log))

    def start(self) -> None:
        for server in self._servers:
            try:
                server.start()
            except OSError as exc:
                self.close()
                raise ListenError(
                    f"cannot serve {server.name} on {server.host}:{server.port}: {exc.strerror}; "
                    f"set another [{server.name}] port or enabled = false"
                ) from None
            event = "metrics_serving" if server.name == "metrics" else "web_serving"
            path = "/metrics" if server.name == "metrics" else "/"
            self._log.info(event, url=f"{server.url}{path}", token=server.guard is not None)

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._catalogs.close()
