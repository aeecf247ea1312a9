"""The web's request parsing, file resolution, Range arithmetic and token check (pure, on real files)."""

from __future__ import annotations

import os
from email.message import Message
from pathlib import Path

import pytest

from msightd.daemon.web.files import RangeNotSatisfiable, byte_range, open_in_dir
from msightd.daemon.web.http import BadRequest, Request, TokenGuard, is_loopback, parse_request_target

SUFFIXES = (".mp4", ".json", ".jpg")


@pytest.mark.parametrize(
    "target",
    [
        "/files/dump/..%2F..%2Fetc%2Fpasswd",
        "/files/dump/%2e%2e",
        "/files/%2E%2E/x.mp4",
        "/files/dump/a%5Cb.mp4",
        "/files/dump/a%00.mp4",
        "/files/dump/../../etc/passwd",
        "/files/dump/./x.mp4",
        "http://evil.example/files/dump/x.mp4",
        "//evil.example/files",  # would make the token redirect's Location leave the site
        "files/dump/x.mp4",
    ],
)
def test_targets_that_could_change_the_path_are_refused(target: str) -> None:
    with pytest.raises(BadRequest):
        parse_request_target(target)


def test_a_target_splits_into_decoded_segments_and_first_query_values() -> None:
    path, segments, query = parse_request_target("/sensor//cam%201/?archive=a%26b&x=1&x=2")
    assert path == "/sensor//cam%201/"
    assert segments == ("sensor", "cam 1")
    assert query == {"archive": "a&b", "x": "1"}


@pytest.fixture
def save_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "videos"
    directory.mkdir()
    (directory / "cam_20260101_000000_000000.mp4").write_bytes(b"video")
    (tmp_path / "secret.mp4").write_bytes(b"secret")
    return directory


def test_a_plain_file_in_the_directory_opens(save_dir: Path) -> None:
    opened = open_in_dir(save_dir, "cam_20260101_000000_000000.mp4", SUFFIXES)
    assert opened is not None
    with opened[0] as file:
        assert file.read() == b"video"


@pytest.mark.parametrize(
    "name",
    ["../secret.mp4", "/etc/passwd", ".hidden.mp4", "cam.txt", "", "a/b.mp4", "..", "cam_20260101_000000_000000.MP4"],
)
def test_names_outside_the_pattern_are_not_opened(save_dir: Path, name: str) -> None:
    (save_dir / ".hidden.mp4").write_bytes(b"x")
    (save_dir / "cam.txt").write_bytes(b"x")
    assert open_in_dir(save_dir, name, SUFFIXES) is None


def test_symlinks_are_never_followed_even_inside_the_directory(save_dir: Path) -> None:
    (save_dir / "out.mp4").symlink_to(save_dir.parent / "secret.mp4")
    (save_dir / "in.mp4").symlink_to(save_dir / "cam_20260101_000000_000000.mp4")
    assert open_in_dir(save_dir, "out.mp4", SUFFIXES) is None
    assert open_in_dir(save_dir, "in.mp4", SUFFIXES) is None


def test_fifos_and_directories_are_not_served(save_dir: Path) -> None:
    os.mkfifo(save_dir / "pipe.mp4")
    (save_dir / "dir.mp4").mkdir()
    assert open_in_dir(save_dir, "pipe.mp4", SUFFIXES) is None  # and it did not block
    assert open_in_dir(save_dir, "dir.mp4", SUFFIXES) is None


def test_a_missing_directory_is_no_file(tmp_path: Path) -> None:
    assert open_in_dir(tmp_path / "nope", "a.mp4", SUFFIXES) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-", (0, 100)),
        ("bytes=10-19", (10, 10)),
        ("bytes=90-500", (90, 10)),
        ("bytes=-30", (70, 30)),
        ("bytes=-500", (0, 100)),
        ("bytes=0-0", (0, 1)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file (allowed by RFC 9110)
        ("items=0-1", None),
        ("bytes=20-10", None),
        ("bytes=-", None),
    ],
)
def test_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=500-600", "bytes=-0"])
def test_ranges_past_the_end_are_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, 100)


def _request(target: str, **headers: str) -> Request:
    message = Message()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    path, segments, query = parse_request_target(target)
    return Request("GET", path, segments, query, message)


def test_the_token_is_taken_from_bearer_cookie_or_query() -> None:
    guard = TokenGuard("s3cret")
    assert guard.check(_request("/", Authorization="Bearer s3cret")) is None
    assert guard.check(_request("/", Cookie="other=1; msightd_token=s3cret")) is None
    redirect = guard.check(_request("/sensor?token=s3cret&sensor=cam"))
    assert redirect is not None and redirect.status == 303
    assert redirect.headers["Location"] == "/sensor?sensor=cam"
    cookie = redirect.headers["Set-Cookie"]
    assert "msightd_token=s3cret" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}, {"Cookie": "msightd_token=s3cre"}],
)
def test_a_missing_or_wrong_token_is_refused(headers: dict[str, str]) -> None:
    refusal = TokenGuard("s3cret").check(_request("/?token=nope", **headers))
    assert refusal is not None and refusal.status == 401


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("192.168.1.5", False), ("example.com", False), ("localhost.example.com", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
