from __future__ import annotations

from pathlib import Path

import pytest

from msightd.cli import launch
from msightd.config.load import load_config
from msightd.config.schema import ConfigFileError, build_options
from msightd.nodes.options import UploaderOptions
from msightd.nodes.uploader import store_settings


def build(**raw: object) -> UploaderOptions:
    options: UploaderOptions = build_options(UploaderOptions, {"name": "up", "bucket_name": "b", **raw}, "node 'up'")
    return options


def problem(**raw: object) -> str:
    with pytest.raises(ConfigFileError) as caught:
        build(**raw)
    return str(caught.value)


def test_a_save_dir_or_a_topic_exactly_one() -> None:
    assert build(save_dir="/data").spooling is False
    assert build(subscribe_topic="video").spooling is True
    assert "exactly one of save_dir" in problem()
    assert "exactly one of save_dir" in problem(save_dir="/data", subscribe_topic="video")
    assert "spool_dir is only used with subscribe_topic" in problem(save_dir="/d", spool_dir="/s")
    assert "the spool is always emptied" in problem(subscribe_topic="v", delete_after_upload=False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"key_layout": "flat"}, "key_layout"),
        ({"prefix": "a/../b"}, "prefix"),
        ({"endpoint_url": "seaweedfs:8333"}, "endpoint_url must start with http"),
        ({"aws_access_key_id": "AKIA"}, "set both aws_access_key_id and aws_secret_access_key"),
        ({"concurrency": 0}, "concurrency must be 1-32"),
        ({"max_bandwidth": 100}, "max_bandwidth is in bytes per second"),
        ({"multipart_part_size": 1024}, "S3's minimum part"),
        ({"bucket_name": "a/b"}, "bucket_name"),
    ],
)
def test_bad_options_are_named(raw: dict[str, object], expected: str) -> None:
    assert expected in problem(save_dir="/data", **raw)


def test_secrets_stay_out_of_reprs() -> None:
    options = build(save_dir="/d", aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="s3cr3t")
    assert "s3cr3t" not in repr(options) and "AKIAEXAMPLE" not in repr(options)
    assert "s3cr3t" not in repr(store_settings(options))


def test_spool_defaults_to_a_state_directory_that_survives_reboots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", "/var/lib/edge")
    assert str(build(subscribe_topic="v").directory()) == "/var/lib/edge/msightd/spool/up"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/msightd")  # systemd's StateDirectory=
    assert str(build(subscribe_topic="v").directory()) == "/var/lib/msightd/spool/up"
    assert str(build(subscribe_topic="v", spool_dir="/srv/spool").directory()) == "/srv/spool"


def test_launch_flags_are_msights_and_default_to_its_key_layout(capsys: pytest.CaptureFixture[str]) -> None:
    parser = launch.build_parser("video_s3_uploader")
    flags = {s for action in parser._actions for s in action.option_strings}
    assert {
        "-n",
        "-st",
        "--bucket-name",
        "--prefix",
        "--aws-region",
        "--use-dualstack-endpoint",
        "-w",
        "--wait",
    } <= flags
    assert {"--endpoint-url", "--key-layout", "--max-bandwidth", "--concurrency", "--delete-after-upload"} <= flags
    assert not any("secret" in flag for flag in flags), "secrets on a command line are readable by every user"
    args = vars(parser.parse_args(["-n", "p", "-st", "video", "--bucket-name", "b", "-w", "3"]))
    assert args["key_layout"] == "msight" and args["wait_s"] == 3.0
    with pytest.raises(SystemExit) as exited:
        launch.launch_aws_video_pusher(["-n", "p", "--bucket-name", "b"])  # neither a topic nor a save dir
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "exactly one of --save-dir" in line and "--subscribe-topic" in line


def test_daemon_config_takes_the_uploader_in_both_modes(tmp_path: Path) -> None:
    path = tmp_path / "msightd.toml"
    path.write_text(
        """
[[nodes]]
name = "dumper"
kind = "video_local_dumper"
subscribe_topic = "segments"
save_dir = "/data/videos"

[[nodes]]
name = "uploader"
kind = "video_s3_uploader"
save_dir = "/data/videos"
bucket_name = "traffic"
endpoint_url = "http://store:8333"

[[nodes]]
name = "pusher"
kind = "video_s3_uploader"
subscribe_topic = "segments"
bucket_name = "traffic"
key_layout = "msight"
max_bandwidth = 500000
"""
    )
    config = load_config(path)
    uploader, pusher = config.nodes[1], config.nodes[2]
    assert uploader.options.key_layout == "utc" and uploader.topics == ()  # reads the disk, not the broker
    assert [topic for topic, _ in pusher.topics] == ["segments"]
    path.write_text('[[nodes]]\nname = "u"\nkind = "video_s3_uploader"\nbucket_name = "b"\n')
    with pytest.raises(ConfigFileError, match="exactly one of save_dir"):
        load_config(path)
