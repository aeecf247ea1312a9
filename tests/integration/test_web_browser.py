"""The web page in a real headless Chromium, against a running daemon recording a real RTSP camera.

One daemon run (with a web token) and one browser for every check, to keep CI short.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.ports import free_port
from testbed.rtsp import RtspServer
from testbed.waiting import wait_for
from tests.integration.daemon import Daemon, pipeline_toml, running_daemon
from tests.support.browser import browser_missing, headless_chromium
from tests.support.processes import Proc
from tests.support.web import get

TOKEN = "browser-test-token-7f3c9a1e"


def web_config(camera: RtspServer, web_port: int) -> Any:
    def config(save_dir: Path, metrics_port: int) -> str:
        # a 2 s segment every 2 s (20 frames at 10 fps)
        return pipeline_toml(
            camera.url, save_dir, metrics_port, buffer_size=20, web=f'port = {web_port}\ntoken = "{TOKEN}"'
        )

    return config


def js(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def test_the_page_shows_nodes_thumbnail_segments_and_plays_a_segment(
    rtsp_camera: RtspServer, tmp_path: Path, processes: list[Proc]
) -> None:
    reason = browser_missing()
    if reason is not None:
        pytest.fail(reason)
    web_port = free_port()
    with running_daemon(web_config(rtsp_camera, web_port), tmp_path, processes) as daemon:
        save_dir = tmp_path / "videos"
        wait_for(lambda: len(list(save_dir.glob("*.mp4"))) >= 2, 60, "two segments on disk")
        base = f"http://127.0.0.1:{web_port}"
        # without the token: the page, the API, a video and a thumbnail are refused
        video_name = sorted(save_dir.glob("*.mp4"))[0].name
        for target in ("/", "/api/status", f"/files/video_dumper/{video_name}", "/thumbnail/test_camera.jpg"):
            assert get(web_port, target).status == 401, target
        # the metrics listener needs no token: its own server, with the supervisor's health verdict
        health = get(daemon.metrics_port, "/healthz")
        assert health.status == 200 and json.loads(health.body)["nodes"] == 3, health.text
        assert "msightd_node_up" in get(daemon.metrics_port, "/metrics").text
        with headless_chromium() as driver:
            driver.get(f"{base}/")
            assert "needs its web token" in driver.find_element("tag name", "body").text
            check_status_page(driver, base, daemon)
            check_sensor_page(driver, save_dir)


def check_status_page(driver: Any, base: str, daemon: Daemon) -> None:
    driver.get(f"{base}/?token={TOKEN}")  # sets the cookie, redirects to /
    assert driver.current_url == f"{base}/"
    rows = js(driver, "return [...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.node)")
    assert sorted(rows) == sorted(daemon.nodes())
    wait_for(
        lambda: js(driver, "const i = document.querySelector('img.thumbnail'); return i.complete && i.naturalWidth"),
        20,
        "the camera's thumbnail to load",
        interval_s=0.5,
    )
    assert js(driver, "return document.querySelector('img.thumbnail').naturalWidth") == 320
    assert js(driver, "return document.querySelectorAll('.timeline rect.recorded').length") >= 1


def check_sensor_page(driver: Any, save_dir: Path) -> None:
    driver.find_element("css selector", "a.sensor-link").click()

    def listing_brackets_disk() -> bool:
        """The dumper writes a segment every 2 s, so one may land between the page's render and a look at the
        disk: the listing must hold every segment on disk before the load and none that was not on disk
        after it. A reload answers a segment that landed during the load (or was between rename and catalog
        row); a page that never lists what is on disk still fails here."""
        before = {path.stem for path in save_dir.glob("*.mp4")}
        driver.refresh()
        listed = set(js(driver, "return [...document.querySelectorAll('tr.segment')].map(r => r.dataset.stem)"))
        after = {path.stem for path in save_dir.glob("*.mp4")}
        return bool(listed) and before <= listed <= after

    wait_for(listing_brackets_disk, 20, "the sensor page to list exactly the segments on disk", interval_s=0.2)
    wait_for(lambda: js(driver, "return document.getElementById('player').readyState") >= 2, 20, "the video to load")
    first = js(driver, "return document.getElementById('player').currentTime")
    time.sleep(1.0)
    player = js(driver, "const v = document.getElementById('player'); return [v.currentTime, v.error && v.error.code]")
    assert player[1] is None and player[0] > first, player
