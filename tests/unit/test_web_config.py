"""The [web] table: defaults, a token that is safe in a cookie and hard to guess, a port of its own; and the
page's view of the configured nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from msightd.config.load import parse_config
from msightd.config.model import WebConfig
from msightd.config.schema import ConfigFileError
from msightd.daemon.web.wiring import site_layout

NODES = [
    {"name": "cam", "kind": "rtsp", "url": "rtsp://x/y", "publish_topic": "frames", "sensor_name": "north/1"},
    {"name": "agg", "kind": "image_to_video_aggregator", "subscribe_topic": "frames", "publish_topic": "segments"},
    {"name": "dump", "kind": "video_local_dumper", "subscribe_topic": "segments", "save_dir": "/srv/videos"},
]


def parse(web: dict[str, object], metrics: dict[str, object] | None = None) -> WebConfig:
    document = {"web": web, "metrics": metrics or {}, "nodes": NODES}
    config = parse_config(document, "test.toml")
    return config.web


def problems(web: dict[str, object], metrics: dict[str, object] | None = None) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        parse(web, metrics)
    return caught.value.problems


def test_the_web_is_on_loopback_9465_without_a_token_by_default() -> None:
    assert parse({}) == WebConfig(enabled=True, host="127.0.0.1", port=9465, token=None)


def test_a_good_token_is_kept() -> None:
    assert parse({"token": "Zq3-_x.~+/=abcdefgh"}).token == "Zq3-_x.~+/=abcdefgh"


@pytest.mark.parametrize("token", ["short", "sixteen chars ok", "a;b=c" * 4, "é" * 20, ""])
def test_a_token_that_is_short_or_unsafe_in_a_cookie_is_one_clear_problem(token: str) -> None:
    (problem,) = problems({"token": token})
    assert problem.startswith("test.toml: [web]: token must be 16 to 256 of the characters")
    assert "secrets.token_urlsafe" in problem


def test_the_web_and_metrics_cannot_share_a_port() -> None:
    (problem,) = problems({"port": 9000}, {"port": 9000})
    assert "[web] port 9000 is also [metrics] port" in problem
    assert parse({"port": 9000, "enabled": False}, {"port": 9000}).enabled is False


def test_unknown_keys_and_types_name_the_table() -> None:
    assert problems({"prot": 1})[0].startswith("test.toml: [web]: unknown key 'prot'")
    assert problems({"port": "9465"})[0] == "test.toml: [web]: key 'port' must be an integer, got '9465'"


def test_cameras_and_save_dirs_come_from_the_nodes(tmp_path: Path) -> None:
    layout = site_layout(parse_config({"nodes": NODES}, "test.toml"), tmp_path)
    ((camera,), (archive,)) = layout.cameras, layout.archives
    assert (camera.node, camera.sensor_name) == ("cam", "north/1")
    assert camera.thumbnail_name.startswith("north_1-") and camera.thumbnail_name.endswith(".jpg")
    assert (archive.name, archive.save_dir) == ("dump", Path("/srv/videos"))
    assert layout.thumbnail_dir == tmp_path
