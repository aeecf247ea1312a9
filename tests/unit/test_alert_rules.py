"""The shipped Prometheus alert rules: valid (``promtool check rules``), unit-tested rule by rule
(``promtool test rules`` on packaging/prometheus/msightd-alerts.test.yml), and those unit tests really
fail when a rule changes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.prometheus import ALERT_RULE_TESTS, ALERT_RULES, scaled_rules, without_windows


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: scripts/system-deps test installs Debian's prometheus", pytrace=False)
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def alert_names(rules_text: str) -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)\s*$", rules_text, flags=re.MULTILINE)


def test_the_shipped_rules_are_valid() -> None:
    result = promtool("check", "rules", str(ALERT_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names(ALERT_RULES.read_text()))} rules found" in result.stdout


def test_every_rule_passes_its_unit_tests() -> None:
    result = promtool("test", "rules", ALERT_RULE_TESTS.name, cwd=ALERT_RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_case_where_it_fires_and_no_case_names_a_missing_rule() -> None:
    """An ``exp_alerts: []`` case for a misspelt alert name would pass without testing anything."""
    rules = set(alert_names(ALERT_RULES.read_text()))
    cases = re.split(r"^\s*- eval_time:", ALERT_RULE_TESTS.read_text(), flags=re.MULTILINE)[1:]
    named = [re.search(r"alertname: (\w+)", case) for case in cases]
    assert all(named), "every case names an alert"
    tested = {match[1] for match in named if match}
    assert tested <= rules, f"cases for rules that do not exist: {tested - rules}"
    firing = {match[1] for match, case in zip(named, cases, strict=True) if match and "exp_labels" in case}
    assert firing == rules, f"rules never seen firing: {rules - firing}"


# One change per rule that must make its unit tests fail: each rule's tests can fail.
BREAKING_CHANGES = {
    "MsightdDown": ('up{job="msightd"} == 0', 'up{job="msightd"} == 2'),
    "MsightdCameraDown": ("(rate(msightd_rtsp_reconnects_total[2m]))", "(rate(msightd_rtsp_reconnects_total[2m])) + 1"),
    "MsightdNoSegmentsWritten": (
        "increase(msightd_segments_written_total[5m])",
        "rate(msightd_segments_written_total[1m])",
    ),
    "MsightdNodeDown": ("up == 0\n        for: 2m", "up == 0\n        for: 1m"),
    "MsightdNodeRestartLoop": ("[15m]) > 3", "[15m]) > 4"),
    "MsightdNodeHung": ("unless msightd_node_hangs_total offset 15m", "unless msightd_node_hangs_total offset 1m"),
    "MsightdDiskNearlyFull": ("predict_linear(msightd_storage_free_bytes[1h], 4 * 3600) < 0", "vector(1)"),
    "MsightdDiskFull": ("< 0.02", "< 0.01"),
    "MsightdUploadBacklogTooOld": ("> 3600", "> 7200"),
    "MsightdSaveDirUnusable": (
        "msightd_save_dir_usable == 0\n        for: 2m",
        "msightd_save_dir_usable == 0\n        for: 5m",
    ),
}


def test_there_is_a_breaking_change_for_every_rule() -> None:
    assert set(BREAKING_CHANGES) == set(alert_names(ALERT_RULES.read_text()))


@pytest.mark.parametrize("rule", sorted(BREAKING_CHANGES))
def test_the_unit_tests_catch_a_changed_rule(rule: str, tmp_path: Path) -> None:
    old, new = BREAKING_CHANGES[rule]
    text = ALERT_RULES.read_text()
    assert text.count(old) == 1, f"{old!r} should occur once in the rules"
    (tmp_path / ALERT_RULES.name).write_text(text.replace(old, new))
    shutil.copy(ALERT_RULE_TESTS, tmp_path / ALERT_RULE_TESTS.name)
    assert promtool("check", "rules", ALERT_RULES.name, cwd=tmp_path).returncode == 0
    result = promtool("test", "rules", ALERT_RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {rule}," in result.stdout + result.stderr


def test_the_scaled_copy_for_live_tests_differs_only_in_its_windows(tmp_path: Path) -> None:
    text = ALERT_RULES.read_text()
    scaled = scaled_rules(text, 12)
    assert without_windows(scaled) == without_windows(text)
    assert "rate(msightd_frames_read_total[10s])" in scaled
    assert "for: 5s" in scaled and "offset 75s" in scaled and "4 * 3600" in scaled
    assert "for: 1m" not in scaled
    (tmp_path / "scaled.yml").write_text(scaled)
    result = promtool("check", "rules", str(tmp_path / "scaled.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
