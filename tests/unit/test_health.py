"""The health verdict behind /healthz and `msightd status`: which node situations are problems."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from msightd.daemon.health import (
    DEFAULT_CAMERA_SILENCE_S,
    HealthReport,
    NodeExpectation,
    disk_low_thresholds,
    evaluate,
    expectations_for,
    readings_from_metrics,
    with_readings,
)

NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Options:
    publish_topic: str | None = None
    subscribe_topic: str | None = None
    buffer_size: int | None = None
    fps: float | None = None


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    options: Options


PIPELINE = [
    Spec("cam", "rtsp", Options(publish_topic="frames")),
    Spec("agg", "image_to_video_aggregator", Options("segments", "frames", buffer_size=100, fps=10.0)),
    Spec("dump", "video_local_dumper", Options(subscribe_topic="segments")),
]


def node(name: str, kind: str, state: str = "running", **fields: Any) -> dict[str, Any]:
    alive = state in ("starting", "running", "stopping")
    return {
        "name": name,
        "kind": kind,
        "state": state,
        "pid": 100 if alive else None,
        "uptime_s": 600.0 if alive else None,
        "restarts": 0,
        "last_exit": None,
        "restart_policy": "always",
        "last_progress_at": NOW - 1,
        **fields,
    }


def healthy() -> list[dict[str, Any]]:
    return [node("cam", "rtsp"), node("agg", "image_to_video_aggregator"), node("dump", "video_local_dumper")]


def replace(nodes: list[dict[str, Any]], name: str, **fields: Any) -> list[dict[str, Any]]:
    return [{**n, **fields} if n["name"] == name else n for n in nodes]


def problems(report: HealthReport) -> list[tuple[str, str]]:
    return [(p.node, p.problem) for p in report.problems]


def test_a_running_pipeline_that_progresses_is_healthy() -> None:
    report = evaluate(healthy(), expectations_for(PIPELINE), NOW)
    assert report.ok and report.http_status == 200
    assert report.to_json() == {"ok": True, "status": "ok", "checked_at": NOW, "nodes": 3, "problems": []}


def test_a_dumper_expects_a_segment_within_three_intervals_of_the_aggregator_feeding_it() -> None:
    expectations = expectations_for(PIPELINE)
    assert expectations["dump"].progress_within_s == 30.0  # 3 x 100 frames / 10 fps
    assert expectations["cam"].progress_within_s == DEFAULT_CAMERA_SILENCE_S
    assert expectations["agg"].progress_within_s is None
    slower = Spec("agg2", "image_to_video_aggregator", Options("segments", "frames2", buffer_size=300, fps=10.0))
    assert expectations_for([*PIPELINE, slower])["dump"].progress_within_s == 90.0
    # segments from another program: nothing to expect
    assert expectations_for([PIPELINE[2]])["dump"].progress_within_s is None


def test_a_dumper_without_a_segment_for_longer_than_three_intervals_is_reported() -> None:
    expectations = expectations_for(PIPELINE)
    assert evaluate(replace(healthy(), "dump", last_progress_at=NOW - 29), expectations, NOW).ok
    report = evaluate(replace(healthy(), "dump", last_progress_at=NOW - 31), expectations, NOW)
    assert problems(report) == [("dump", "no_segments")]
    assert report.problems[0].detail == "no segment written for 31 s since its last (limit 30 s)"
    assert report.http_status == 503


def test_a_camera_without_frames_is_reported_even_before_its_first_frame() -> None:
    expectations = expectations_for(PIPELINE, camera_silence_s=20)
    silent = replace(healthy(), "cam", last_progress_at=NOW - 25)
    assert problems(evaluate(silent, expectations, NOW)) == [("cam", "camera_silent")]
    never = replace(healthy(), "cam", state="starting", last_progress_at=None, uptime_s=21.0)
    report = evaluate(never, expectations, NOW)
    assert problems(report) == [("cam", "camera_silent")]
    assert "since it started, and none yet" in report.problems[0].detail
    just_started = replace(healthy(), "cam", state="starting", last_progress_at=None, uptime_s=3.0)
    assert evaluate(just_started, expectations, NOW).ok


def test_a_node_that_hung_is_reported_until_it_runs_again() -> None:
    expectations = expectations_for(PIPELINE)
    hung = "hung: no heartbeat for 30 s; killed"
    in_backoff = replace(healthy(), "agg", state="backoff", pid=None, uptime_s=None, last_exit=hung)
    report = evaluate(in_backoff, expectations, NOW)
    assert problems(report) == [("agg", "hung")]
    assert report.problems[0].detail.startswith(hung)
    restarting = replace(healthy(), "agg", state="starting", uptime_s=1.0, last_exit=hung)
    assert problems(evaluate(restarting, expectations, NOW)) == [("agg", "hung")]
    assert evaluate(replace(healthy(), "agg", last_exit=hung), expectations, NOW).ok


def test_failed_exited_backoff_and_stopped_nodes_are_problems_without_progress_noise() -> None:
    expectations = expectations_for(PIPELINE)
    for state, problem in [
        ("failed", "failed"),
        ("exited", "exited"),
        ("backoff", "backoff"),
        ("stopped", "not_running"),
    ]:
        nodes = replace(
            healthy(), "cam", state=state, pid=None, uptime_s=None, last_exit="killed by SIGKILL", last_progress_at=0
        )
        report = evaluate(nodes, expectations, NOW)
        assert problems(report) == [("cam", problem)], state
        assert report.problems[0].detail == f"node is {state}: killed by SIGKILL"


def test_a_node_starting_for_too_long_is_not_ready() -> None:
    expectations = expectations_for(PIPELINE)
    stuck = replace(healthy(), "agg", state="starting", uptime_s=61.0)
    assert problems(evaluate(stuck, expectations, NOW)) == [("agg", "not_ready")]
    # a node the daemon has no expectation for is judged by its state alone
    assert problems(evaluate(stuck, {}, NOW)) == [("agg", "not_ready")]
    assert evaluate(replace(healthy(), "agg", last_progress_at=None), {}, NOW).ok


def test_disk_below_its_floor_and_an_old_upload_backlog_are_reported() -> None:
    specs = [*PIPELINE, Spec("up", "video_s3_uploader", Options(subscribe_topic="segments"))]
    expectations = expectations_for(specs, min_free_bytes={"dump": 5e9}, upload_max_age_s=3600)
    assert expectations["up"].upload_max_age_s == 3600 and expectations["dump"].upload_max_age_s is None
    nodes = [*healthy(), node("up", "video_s3_uploader")]
    fine = with_readings(nodes, {"dump": {"storage_free_bytes": 6e9}, "up": {"upload_oldest_pending_age_s": 3599}})
    assert evaluate(fine, expectations, NOW).ok
    bad = with_readings(nodes, {"dump": {"storage_free_bytes": 4e9}, "up": {"upload_oldest_pending_age_s": 7200}})
    report = evaluate(bad, expectations, NOW)
    assert problems(report) == [("dump", "disk_low"), ("up", "upload_backlog_old")]
    assert report.problems[0].detail == "4.00 GB free, below the floor of 5.00 GB"
    assert report.problems[1].detail == "oldest segment waiting for upload is 7200 s old (limit 3600 s)"
    body = json.loads(json.dumps(report.to_json()))
    assert body["ok"] is False and body["status"] == "unhealthy"
    assert body["problems"][0] == {"node": "dump", "problem": "disk_low", "detail": report.problems[0].detail}


def test_readings_come_from_the_metrics_the_daemon_aggregates() -> None:
    registry = CollectorRegistry()
    free = Gauge("msightd_storage_free_bytes", "", ("node", "sensor"), registry=registry)
    free.labels("dump", "a").set(7e9)
    free.labels("dump", "b").set(6e9)
    age = Gauge("msightd_upload_oldest_pending_age_seconds", "", ("node",), registry=registry)
    age.labels("up").set(12.5)
    Gauge("msightd_node_up", "", ("node",), registry=registry).labels("dump").set(1)
    assert readings_from_metrics(registry.collect()) == {
        "dump": {"storage_free_bytes": 6e9},
        "up": {"upload_oldest_pending_age_s": 12.5},
    }


def test_the_module_imports_no_media_stack() -> None:
    code = "import sys, msightd.daemon.health; print(sorted({'cv2', 'av', 'numpy'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_an_expectation_without_limits_checks_only_state() -> None:
    expectations = {"cam": NodeExpectation(kind="rtsp")}
    assert evaluate(replace(healthy(), "cam", last_progress_at=NOW - 10_000), expectations, NOW).ok


def test_a_dumper_whose_save_dir_is_unusable_is_reported() -> None:
    expectations = expectations_for(PIPELINE)
    assert evaluate(with_readings(healthy(), {"dump": {"save_dir_usable": 1.0}}), expectations, NOW).ok
    report = evaluate(with_readings(healthy(), {"dump": {"save_dir_usable": 0.0}}), expectations, NOW)
    assert problems(report) == [("dump", "save_dir_unusable")]
    registry = CollectorRegistry()
    Gauge("msightd_save_dir_usable", "", ("node",), registry=registry).labels("dump").set(0)
    assert readings_from_metrics(registry.collect()) == {"dump": {"save_dir_usable": 0.0}}


@dataclass(frozen=True)
class DumperOptions:
    save_dir: str
    min_free_space: str | int | None = None


def test_disk_low_is_half_the_dumpers_free_space_floor_of_its_filesystem() -> None:
    """Retention holds free space at the floor; half of it means retention is not keeping up."""
    specs = [
        Spec("pct", "video_local_dumper", DumperOptions("/a", "10%")),
        Spec("abs", "video_local_dumper", DumperOptions("/b", "2GB")),
        Spec("none", "video_local_dumper", DumperOptions("/c")),
        Spec("gone", "video_local_dumper", DumperOptions("/missing", "1GB")),
    ]
    sizes = {"/a": 500e9, "/b": 100e9, "/c": 100e9}
    thresholds = disk_low_thresholds(specs, sizes.get)
    assert thresholds == {"pct": 25e9, "abs": 1e9}
    report = evaluate(
        [
            node("pct", "video_local_dumper", storage_free_bytes=24e9),
            node("abs", "video_local_dumper", storage_free_bytes=1.5e9),
        ],
        expectations_for(specs, min_free_bytes=thresholds),
        NOW,
    )
    assert problems(report) == [("pct", "disk_low")]
