"""Structured logging for every msightd process.

One configuration per process (structlog is configured globally by design; each node runs in its own
process, so this is the process's entry point doing it once). Two renderings of the same events:

* ``json``: one JSON object per line (journald, files, anything that is not a terminal);
* ``console``: MSight's line shape, ``2026-01-24 11:28:45,684 - <device> - <node> - INFO :: <message>``,
  followed by the event's key=value fields, coloured on a terminal.

Events have stable names (``segment_written``); a human sentence, where there is one, travels in ``msg``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any, TextIO

import structlog

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")

_COLOURS = {"debug": "\033[2m", "info": "\033[32m", "warning": "\033[33m", "error": "\033[31m", "critical": "\033[31m"}
_RESET = "\033[0m"
_HEADER_KEYS = ("timestamp", "level", "event", "msg", "device", "node")


class ConsoleRenderer:
    """Render MSight's line shape; extra fields follow as key=value."""

    def __init__(self, colour: bool) -> None:
        self._colour = colour

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> str:
        level = str(event.get("level", "info"))
        stamp = datetime.fromtimestamp(float(event.get("ts", 0.0)))
        when = stamp.strftime("%Y-%m-%d %H:%M:%S,") + f"{stamp.microsecond // 1000:03d}"
        text = event.get("msg") or event.get("event", "")
        fields = " ".join(f"{k}={_short(v)}" for k, v in event.items() if k not in (*_HEADER_KEYS, "ts"))
        if event.get("msg") and event.get("event"):
            fields = f"event={event['event']} {fields}".rstrip()
        device = event.get("device", "-")
        node = event.get("node", "msightd")
        level_text = level.upper()
        if self._colour:
            level_text = f"{_COLOURS.get(level, '')}{level_text}{_RESET}"
        line = f"{when} - {device} - {node} - {level_text} :: {text}"
        return f"{line}  {fields}" if fields else line


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def _add_time(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    now = datetime.now().astimezone()
    event["ts"] = now.timestamp()
    return event


def _iso_time(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["timestamp"] = datetime.fromtimestamp(event.pop("ts")).astimezone().isoformat(timespec="microseconds")
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None, **context: Any) -> None:
    """Configure this process's logging; ``context`` (e.g. ``device``, ``node``) is bound to every line."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    if fmt == "json":
        tail: list[Any] = [_iso_time, structlog.processors.JSONRenderer(default=str)]
    else:
        tail = [ConsoleRenderer(colour=out.isatty())]
    static_context = dict(context)

    def add_context(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in static_context.items():
            event.setdefault(key, value)
        return event

    structlog.configure(
        processors=[
            add_context,
            structlog.processors.add_log_level,
            _add_time,
            structlog.processors.format_exc_info,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # one write() per line (message and newline together), so lines of processes sharing a stream never mix
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def redact_url(url: str) -> str:
    """``scheme://user:password@host/...`` without its credentials, for logs and error messages.

    Everything between ``://`` and the *last* ``@`` is replaced by ``***``: passwords may hold ``@``, ``:``
    and even ``/`` (IP cameras accept them unescaped), so the host is what follows the last ``@``, up to
    the next ``/``. A URL without ``@`` is returned unchanged; one whose path or query holds an ``@``
    loses more than its credentials (better a hidden host name than a leaked password). Text without
    ``://`` (a file path) is returned unchanged.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def redact_urls_in(text: str, url: str) -> str:
    """``text`` (an error message from a library, say) with every copy of ``url`` redacted."""
    return text.replace(url, redact_url(url)) if url else text


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(**context)
    return logger
