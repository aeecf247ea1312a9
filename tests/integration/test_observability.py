"""One /metrics endpoint for the whole pipeline, checked against what is really on disk; JSON logs."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from msightd.media.sample import write_sample_video
from testbed.ports import free_port
from testbed.waiting import wait_for
from tests.integration.daemon import pipeline_toml, running_daemon
from tests.integration.pipeline import launch, segments_on_disk
from tests.support.processes import Proc
from tests.support.redis import RedisEndpoint

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, lbl), v in samples.items() if n == name and set(labels.items()) <= set(lbl))


def test_daemon_metrics_agree_with_the_files_and_survive_a_restart(tmp_path: Path, processes: list[Proc]) -> None:
    """A 150-frame clip played once: when the source has finished, every counter equals what is on disk."""
    clip = write_sample_video(tmp_path / "clip.mp4", frame_count=150)
    play_once = lambda d, p: pipeline_toml(clip, d, p).replace("loop = true", 'restart = "on-failure"')  # noqa: E731
    with running_daemon(play_once, tmp_path, processes) as daemon:
        save_dir = tmp_path / "videos"
        wait_for(lambda: len(segments_on_disk(save_dir)) >= 2, 60, "two segments")
        victim = daemon.nodes()["video_dumper"]
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(
            lambda: (
                daemon.nodes()["video_dumper"]["state"] == "running"
                and daemon.nodes()["video_dumper"]["pid"] != victim["pid"]
            ),
            60,
            "the dumper to restart",
        )
        live = scrape(daemon.metrics_port)
        assert total(live, "msightd_frame_rate_hertz", node="rtsp_node", sensor="test_camera") > 5
        wait_for(lambda: daemon.nodes()["rtsp_node"]["state"] == "exited", 60, "the clip to end")
        segments, samples = wait_for(lambda: _at_rest(save_dir, daemon.metrics_port), 60, "the pipeline to settle")
        assert [meta["frame_count"] for _, meta in segments] == [10] * 15
        for name in ("msightd_frames_read_total", "msightd_frames_published_total"):
            assert total(samples, name, node="rtsp_node") == 150, name
        assert total(samples, "msightd_frames_received_total", node="image_aggregator") == 150
        for name in ("msightd_segments_encoded_total", "msightd_segment_encode_duration_seconds_count"):
            assert total(samples, name, node="image_aggregator") == 15, name
        assert total(samples, "msightd_segments_published_total", node="image_aggregator") == 15
        assert total(samples, "msightd_segments_written_total", node="video_dumper") == 15
        assert total(samples, "msightd_capture_to_disk_latency_seconds_count", node="video_dumper") == 15
        files = [path for video, _ in segments for path in (video, video.with_suffix(".json"))]
        assert total(samples, "msightd_written_bytes_total", node="video_dumper") == sum(
            path.stat().st_size for path in files
        )
        assert total(samples, "msightd_node_restarts_total", node="video_dumper") == 1
        assert total(samples, "msightd_node_restarts_total", node="rtsp_node") == 0
        assert total(samples, "msightd_node_up", node="video_dumper") == 1
        assert total(samples, "msightd_node_state", node="video_dumper", state="running") == 1
        assert total(samples, "msightd_node_state", node="rtsp_node", state="exited") == 1
        labels = {name for (name, lbl) in samples for name, _ in lbl}
        assert labels <= {"node", "sensor", "topic", "reason", "state", "version", "le"}

        # every line the daemon and its nodes logged is JSON and says which node it is from
        lines = [line for line in daemon.proc.text().splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines]
        assert all("node" in event and "event" in event and "level" in event for event in parsed)
        assert {e["node"] for e in parsed} == {"msightd", "rtsp_node", "image_aggregator", "video_dumper"}
        assert not [e for e in parsed if e["event"] == "frame_captured"], "per-frame lines are DEBUG under the daemon"
        assert [e for e in parsed if e["event"] == "node_summary" and e["node"] == "rtsp_node"]


def _at_rest(save_dir: Path, port: int) -> tuple[list[tuple[Path, dict[str, Any]]], Samples] | None:
    """Files and a scrape, once two looks one second apart see the same files and the same count."""
    first = (len(segments_on_disk(save_dir)), total(scrape(port), "msightd_segments_written_total"))
    time.sleep(1.0)
    samples = scrape(port)
    segments = segments_on_disk(save_dir)
    second = (len(segments), total(samples, "msightd_segments_written_total"))
    return (segments, samples) if first == second else None


def test_launch_command_serves_its_own_metrics(
    redis_server: RedisEndpoint, sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    port = free_port()
    source = launch(
        processes,
        tmp_path,
        "rtsp",
        [
            "msight_launch_rtsp",
            "-n",
            "cam",
            "-u",
            str(sample_video),
            "-pt",
            "frames",
            "--sensor-name",
            "c1",
            "--loop",
            "--metrics-port",
            str(port),
        ],
        redis_server.url,
    )
    wait_for(
        lambda: total(_try_scrape(port), "msightd_frames_published_total", node="cam", sensor="c1") >= 10,
        60,
        "frames to be counted",
    )
    per_frame = source.has_event("frame_captured")
    assert per_frame and per_frame[0]["msg"].startswith("Got image from c1, the image shape is (480, 640, 3), time: ")


def _try_scrape(port: int) -> Samples:
    try:
        return scrape(port)
    except OSError:
        return {}


def test_a_node_removed_on_reload_leaves_no_stale_series(
    sample_video: Path, tmp_path: Path, processes: list[Proc]
) -> None:
    spare = f"""
[[nodes]]
name = "spare"
kind = "rtsp"
url = "{sample_video}"
loop = true
publish_topic = "spare_images"
sensor_name = "spare_camera"
"""
    with running_daemon(lambda d, p: pipeline_toml(sample_video, d, p, extra=spare), tmp_path, processes) as daemon:
        wait_for(
            lambda: total(scrape(daemon.metrics_port), "msightd_frames_read_total", node="spare") > 5,
            60,
            "the spare node's frames to be counted",
        )
        daemon.config_path.write_text(daemon.config_path.read_text().replace(spare, ""))
        daemon.proc.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.proc.has_event("reloaded"), 60, "the reload")
        assert "spare" not in daemon.nodes()
        series = [key for key in scrape(daemon.metrics_port) if ("node", "spare") in key[1]]
        assert series == []
        assert total(scrape(daemon.metrics_port), "msightd_frames_read_total", node="rtsp_node") > 0
