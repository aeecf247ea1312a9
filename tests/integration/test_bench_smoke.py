"""The benchmark script (python -m bench.run_bench) still runs end to end: real RTSP camera, broker, daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_bench_runs_and_writes_its_report(tmp_path: Path) -> None:
    result_path = tmp_path / "bench.json"
    # 20-frame segments so that a short run still writes full segments (latency, bytes per segment)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run_bench",
            "--duration",
            "8",
            "--cameras",
            "1",
            "--buffer-size",
            "20",
            "--skip-floor",
            "--repeat",
            "2",
            "--json",
            str(result_path),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    assert "msightd benchmark: 1 camera(s)" in completed.stdout
    assert "TOTAL pipeline" in completed.stdout
    assert "2 pairs (the table above is the median one):" in completed.stdout

    result = json.loads(result_path.read_text())
    assert {"settings", "environment", "clips", "pipeline", "floor", "ratio_total_to_floor"} <= result.keys()
    assert result["floor"] is None
    pipeline = result["pipeline"]
    assert pipeline["frames_published"] > 0
    assert pipeline["frames_in_segments"] > 0
    assert pipeline["full_segments"] > 0
    assert set(pipeline["nodes"]) == {"cam0_rtsp", "aggregator", "dumper", "broker", "daemon"}
    for name in ("cam0_rtsp", "aggregator", "dumper"):
        assert pipeline["nodes"][name]["cpu_s_per_frame"] is not None, name
        assert pipeline["nodes"][name]["rss_max_mb"] > 0, name
    assert pipeline["nodes"]["aggregator"]["cpu_s_per_frame"] > 0
    assert pipeline["total_cpu_s_per_frame"] > 0
    for key in ("frames_dropped", "latency_s", "mb_per_segment"):
        assert key in pipeline
    # every frame a camera reported publishing is in a written segment, once (SIGTERM flushes the rest)
    assert pipeline["accounting"] == "counts"
    assert pipeline["frames_published"] == pipeline["frames_in_segments"] > 0
    assert pipeline["frames_dropped"] == 0 and pipeline["frames_duplicated"] == 0
    assert [pair["frames_dropped"] for pair in result["pairs"]] == [0, 0]
    # the broker holds what is in flight: written segments and frames in written segments are trimmed
    held = pipeline["broker_memory"]
    assert "broker at the end: used_memory" in completed.stdout and held["rss_mb"] > 0
    assert held["stream_entries"]["aggregated_video"] <= 1, held
    assert held["stream_entries"]["rtsp_images"] <= 2 * 20 + 10, held
