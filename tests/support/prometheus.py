"""A real Prometheus server (Debian's ``prometheus`` package) on a free loopback port, for tests.

It gets its own data directory and a generated config that scrapes the given targets every second and
evaluates the given rule files every second; its HTTP API is read with :meth:`PrometheusServer.query` and
:meth:`PrometheusServer.alerts`. It never uses 9090, the port the package's own system service (if one
runs on the machine) listens on, and never touches that service's config or data.

The shipped rules (``packaging/prometheus/msightd-alerts.yml``) wait minutes before they fire, as they
should on a real box. :func:`scaled_rules` renders a copy with every time window divided by a factor, and
nothing else changed (the same expressions, thresholds, labels and annotations), so a test can watch the
shipped logic fire on a faster clock. The shipped file itself, with its real windows, is what
``promtool test rules`` checks (tests/unit/test_alert_rules.py).
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testbed.ports import free_port
from testbed.waiting import wait_for
from tests.support.processes import Proc

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = REPO_ROOT / "packaging" / "prometheus" / "msightd-alerts.yml"
ALERT_RULE_TESTS = REPO_ROOT / "packaging" / "prometheus" / "msightd-alerts.test.yml"
#: The port of the distribution's own Prometheus service; a test server must never take it.
SYSTEM_SERVICE_PORT = 9090

# A Prometheus duration: one or more number+unit pairs, largest unit first (1h30m, 90s, 500ms).
_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
# Where a duration is a time window: a rule's `for:`, a range or subquery selector, an offset.
_WINDOWS = (
    re.compile(rf"(?P<pre>\bfor:\s*)(?P<d>{_DURATION})\b"),
    re.compile(rf"(?P<pre>\[)(?P<d>{_DURATION})(?=[:\]])"),
    re.compile(rf"(?P<pre>\[{_DURATION}:)(?P<d>{_DURATION})(?=\])"),
    re.compile(rf"(?P<pre>\boffset\s+)(?P<d>{_DURATION})\b"),
)


def duration_ms(text: str) -> int:
    """``"1h30m"`` -> 5_400_000."""
    return sum(int(number) * _UNIT_MS[unit] for number, unit in re.findall(r"(\d+)(ms|[smhdwy])", text))


def _format_ms(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scaled_rules(rules_text: str, divisor: int) -> str:
    """The rules with every time window (``for:``, ``[range]``, ``[range:step]``, ``offset``) divided by
    ``divisor`` (at least 1 ms). Numbers inside expressions (thresholds, ``predict_linear``'s horizon in
    seconds) are left as they are: only what is written as a duration is a window."""

    def shrink(match: re.Match[str]) -> str:
        return match["pre"] + _format_ms(max(1, duration_ms(match["d"]) // divisor))

    for pattern in _WINDOWS:
        rules_text = pattern.sub(shrink, rules_text)
    return rules_text


def without_windows(rules_text: str) -> str:
    """The rules with every window replaced by a placeholder: equal for a file and its scaled copy."""
    for pattern in _WINDOWS:
        rules_text = pattern.sub(lambda m: m["pre"] + "<window>", rules_text)
    return rules_text


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusServer:
    """One ``prometheus`` process; use :func:`prometheus_server` to get a started one that is stopped after."""

    def __init__(self, work_dir: Path, targets: Sequence[str], rule_files: Sequence[Path], job: str) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (scripts/system-deps test installs Debian's package)")
        self.port = free_port()
        assert self.port != SYSTEM_SERVICE_PORT
        self.url = f"http://127.0.0.1:{self.port}"
        work_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }
        config_path = work_dir / "prometheus.yml"
        config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.proc = Proc(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={work_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            work_dir / "prometheus.log",
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.proc.text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(ready, timeout_s, "prometheus to be ready", interval_s=0.2)

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} answered {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant vector: ``[{"metric": {labels}, "value": [time, "value"]}, ...]``."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] != "vector":
            raise AssertionError(f"{expr!r} is a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """``query`` as {label set: value}."""
        return {frozenset(item["metric"].items()): float(item["value"][1]) for item in self.query(expr)}

    def alerts(self, name: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (``pending`` or ``firing``), optionally only those named ``name`` in ``state``."""
        found: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return [
            alert
            for alert in found
            if (name is None or alert["labels"].get("alertname") == name) and (state is None or alert["state"] == state)
        ]

    def rule_health(self) -> dict[str, str]:
        """{rule name: "ok" | "err" | "unknown"} for every loaded rule: an expression Prometheus cannot
        evaluate shows as "err" here and nowhere else."""
        groups = self._get("/api/v1/rules")["groups"]
        return {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}

    def stop(self) -> None:
        self.proc.terminate(timeout_s=15)


@contextmanager
def prometheus_server(
    work_dir: Path, targets: Sequence[str], rule_files: Sequence[Path] = (), job: str = "msightd"
) -> Iterator[PrometheusServer]:
    """A ready Prometheus scraping ``targets`` (host:port) every second as job ``job``."""
    server = PrometheusServer(work_dir, targets, rule_files, job)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
