"""No password reaches a log line or an error message: URLs are cut at the last '@' of their authority."""

from __future__ import annotations

from pathlib import Path

import pytest

from msightd.bus.connection import resolve_redis_settings
from msightd.config.load import load_config
from msightd.config.schema import ConfigFileError
from msightd.logs import redact_url, redact_urls_in


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:se@cret@10.0.0.5/stream", "rtsp://***@10.0.0.5/stream"),
        ("redis://user:p@ss@host/0", "redis://***@host/0"),
        ("redis://:pass@host:6379/0", "redis://***@host:6379/0"),
        ("rtsp://admin:pa:ss@10.0.0.5:554/s", "rtsp://***@10.0.0.5:554/s"),
        ("rtsp://admin:pa/ss@10.0.0.5/stream", "rtsp://***@10.0.0.5/stream"),
        ("rtsp://admin:a@b/c:d@10.0.0.5:554/ch1?subtype=0", "rtsp://***@10.0.0.5:554/ch1?subtype=0"),
        ("rediss://u:p%40ss@broker:6380/2", "rediss://***@broker:6380/2"),
        ("unix://:pw@/run/redis.sock?db=0", "unix://***@/run/redis.sock?db=0"),
    ],
)
def test_credentials_are_cut_up_to_the_last_at_sign(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    ["rtsp://10.0.0.5:554/stream", "redis://localhost:6379/0", "unix:///run/redis.sock?db=0", "/videos/cam@1.mp4"],
)
def test_urls_without_credentials_are_untouched(url: str) -> None:
    assert redact_url(url) == url


def test_a_library_error_quoting_the_url_is_redacted() -> None:
    url = "rtsp://admin:se@cr:et/pw@10.0.0.5/stream"
    text = f"Invalid data found when processing input: '{url}'"
    assert redact_urls_in(text, url) == "Invalid data found when processing input: 'rtsp://***@10.0.0.5/stream'"


def test_broker_description_hides_a_password_holding_at_and_colon() -> None:
    settings = resolve_redis_settings("redis://user:r3d@is:pw@10.0.0.9:6379/0", {})
    assert settings.describe() == "redis://***@10.0.0.9:6379/0"


def test_a_config_error_about_a_url_never_echoes_its_password(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[redis]\nurl = "user:p@ss@host:6379"\n[[nodes]]\nname = "d"\nkind = "video_local_dumper"\n'
                    'subscribe_topic = "s"\nsave_dir = "v"\n')  # fmt: skip
    with pytest.raises(ConfigFileError) as error:
        load_config(str(path))
    assert "key 'url' must be a redis://" in str(error.value.problems)
    assert "p@ss" not in str(error.value.problems)
