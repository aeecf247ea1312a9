"""The shipped alert rules on a real Prometheus scraping a real daemon that records a real RTSP camera.

The rules are the shipped file on a clock 12x faster (every window divided by 12, nothing else changed,
see tests.support.prometheus.scaled_rules): MsightdCameraDown looks 10 s back instead of 2 m and waits
5 s instead of 1 m.
"""

from __future__ import annotations

from pathlib import Path

from testbed.rtsp import RtspServer
from testbed.waiting import wait_for
from tests.integration.daemon import pipeline_toml, running_daemon
from tests.support.processes import Proc
from tests.support.prometheus import ALERT_RULES, prometheus_server, scaled_rules

TIME_DIVISOR = 12


def test_prometheus_sees_the_daemon_and_fires_camera_down_when_the_camera_stops(
    rtsp_camera: RtspServer, tmp_path: Path, processes: list[Proc]
) -> None:
    rules = tmp_path / "msightd-alerts.yml"
    rules.write_text(scaled_rules(ALERT_RULES.read_text(), TIME_DIVISOR))
    config = lambda d, p: pipeline_toml(rtsp_camera.url, d, p)  # noqa: E731
    with (
        running_daemon(config, tmp_path, processes) as daemon,
        prometheus_server(tmp_path / "prometheus", [f"127.0.0.1:{daemon.metrics_port}"], [rules]) as prometheus,
    ):
        # the daemon's series arrive, from the supervisor and from every node
        wait_for(lambda: prometheus.query('up{job="msightd"} == 1'), 60, "a first successful scrape")
        wait_for(
            lambda: len(prometheus.query('msightd_node_up{job="msightd"} == 1')) == 3,
            60,
            "three nodes up in Prometheus",
        )
        wait_for(
            lambda: prometheus.query(
                'rate(msightd_frames_read_total{node="rtsp_node", sensor="test_camera"}[10s]) > 5'
            ),
            60,
            "the camera's frame rate in Prometheus",
        )
        wait_for(lambda: prometheus.query("msightd_segments_written_total > 0"), 60, "a segment counted")
        health = prometheus.rule_health()
        assert set(health) >= {"MsightdCameraDown", "MsightdNoSegmentsWritten", "MsightdNodeDown"}
        assert set(health.values()) == {"ok"}, health
        # a full window of frames has been evaluated: no camera-down alert, not even pending
        assert prometheus.alerts("MsightdCameraDown") == []

        rtsp_camera.stop()
        firing = wait_for(lambda: prometheus.alerts("MsightdCameraDown", "firing"), 60, "MsightdCameraDown to fire")
        assert [alert["labels"] for alert in firing] == [
            {
                "alertname": "MsightdCameraDown",
                "job": "msightd",
                "instance": f"127.0.0.1:{daemon.metrics_port}",
                "node": "rtsp_node",
                "sensor": "test_camera",
                "severity": "critical",
            }
        ]
        assert firing[0]["annotations"]["summary"] == (
            f"Camera test_camera (rtsp_node on 127.0.0.1:{daemon.metrics_port}) delivers no frames"
        )
        # the camera's node is still up and reconnecting: the alert comes from the frames, not the process
        assert daemon.nodes()["rtsp_node"]["state"] in ("running", "starting")
        assert prometheus.alerts("MsightdNodeDown") == []
