"""What ships in packaging/ is checked by the tools that will read it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from msightd.daemon.metrics import SupervisorMetrics
from msightd.metrics import NodeMetrics
from tests.support.processes import command

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        message = "systemd-analyze is missing (scripts/system-deps test installs the systemd package)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)  # CI must run the check, never count a skip as a pass
        pytest.skip(message)
    unit = (PACKAGING / "msightd.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "NoNewPrivileges=yes" in unit
    # verify checks that ExecStart exists: point it at this checkout's msightd
    unit = unit.replace("/opt/msightd/venv/bin/msightd", command("msightd"))
    path = tmp_path / "msightd.service"
    path.write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "msightd.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def exported_metrics() -> set[str]:
    """Every sample name msightd's registries export."""
    exported = set()
    for registry in (NodeMetrics("n").registry, SupervisorMetrics(None).registry):
        for family in registry.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
            exported |= {family.name + suffix for suffix in suffixes}
    return exported


def test_grafana_dashboard_only_uses_metrics_that_exist() -> None:
    dashboard = json.loads((PACKAGING / "grafana" / "msightd-dashboard.json").read_text())
    expressions = json.dumps(dashboard)
    used = set(re.findall(r"msightd_[a-z_]+", expressions))
    assert used, "the dashboard queries msightd metrics"
    assert used <= exported_metrics(), f"unknown metrics in the dashboard: {sorted(used - exported_metrics())}"


# Metrics the alert rules use that other work of issues 12-14 adds (hangs; retention; uploads). Drop each
# name here once it is exported, so that a rule cannot name a metric nobody exports.
ANNOUNCED_METRICS = {
    "msightd_storage_free_bytes",
    "msightd_storage_used_bytes",
    "msightd_upload_oldest_pending_age_seconds",
    "msightd_upload_backlog_segments",
}


def test_alert_rules_only_use_metrics_that_exist() -> None:
    used = set(re.findall(r"msightd_[a-z_]+", (PACKAGING / "prometheus" / "msightd-alerts.yml").read_text()))
    assert {"msightd_frames_read_total", "msightd_segments_written_total", "msightd_node_up"} <= used
    assert used <= exported_metrics() | ANNOUNCED_METRICS, sorted(used - exported_metrics() - ANNOUNCED_METRICS)
