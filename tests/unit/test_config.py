from __future__ import annotations

from pathlib import Path

import pytest

from msightd.bus import STREAM_MAXLEN
from msightd.config.load import load_config
from msightd.config.schema import ConfigFileError

REPO = Path(__file__).resolve().parents[2]

BASE = """
[[nodes]]
name = "cam"
kind = "rtsp"
url = "rtsp://x/y"
publish_topic = "frames"
sensor_name = "c1"

[[nodes]]
name = "agg"
kind = "image_to_video_aggregator"
subscribe_topic = "frames"
publish_topic = "segments"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "msightd.toml"
    path.write_text(text)
    return load_config(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        load(tmp_path, text)
    return caught.value.problems


@pytest.mark.parametrize("path", sorted([REPO / "etc" / "msightd.toml", *(REPO / "etc" / "examples").glob("*.toml")]))
def test_shipped_configs_are_valid(path: Path) -> None:
    assert load_config(path).nodes


def test_defaults_and_overrides(tmp_path: Path) -> None:
    config = load(tmp_path, '[defaults]\nrestart = "on-failure"\nfps = 5\n' + BASE + "fps = 7.5\nrestart = 'never'\n")
    cam, agg = config.nodes  # type: ignore[attr-defined]
    assert cam.restart.restart == "on-failure" and agg.restart.restart == "never"
    assert agg.options.fps == 7.5 and agg.options.buffer_size == 100
    assert config.redis_url is None  # type: ignore[attr-defined]


def test_every_error_names_file_node_key_and_what_is_allowed(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + 'buffer_size = "ten"\nbogus = 1\n')
    assert any("msightd.toml: node 'agg': key 'buffer_size' must be an integer" in p for p in found)
    assert any("node 'agg': unknown key 'bogus'; allowed keys:" in p and "overlap_size" in p for p in found)


def test_overlap_not_smaller_than_buffer(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + "buffer_size = 10\noverlap_size = 10\n")
    assert found == [
        f"{tmp_path / 'msightd.toml'}: node 'agg': overlap_size must be >= 0 and smaller than buffer_size (10), got 10"
    ]


def test_batch_wait_is_bounded_and_takes_integers(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + "batch_wait_s = 30\n")
    assert found == [f"{tmp_path / 'msightd.toml'}: node 'agg': batch_wait_s must be 0..5 seconds, got 30.0"]
    assert load(tmp_path, BASE + "batch_wait_s = 0\n").nodes[1].options.batch_wait_s == 0  # type: ignore[attr-defined]


def test_two_cameras_may_not_publish_one_sensor_name_to_one_topic(tmp_path: Path) -> None:
    second = '\n[[nodes]]\nname = "cam2"\nkind = "rtsp"\nurl = "rtsp://x/z"\n'
    second += 'publish_topic = "frames"\nsensor_name = "c1"\n'
    found = problems(tmp_path, BASE + second)
    assert found == [
        f"{tmp_path / 'msightd.toml'}: node 'cam2': sensor_name 'c1' is already published to 'frames' by node "
        "'cam'; give every camera its own sensor_name"
    ]
    assert load(tmp_path, BASE + second.replace('"c1"', '"c2"')).nodes  # type: ignore[attr-defined]


def test_broker_persistence_is_aof_or_none(tmp_path: Path) -> None:
    assert load(tmp_path, BASE).persistence == "aof"  # type: ignore[attr-defined]
    assert load(tmp_path, '[redis]\npersistence = "none"\n' + BASE).persistence == "none"  # type: ignore[attr-defined]
    found = problems(tmp_path, '[redis]\npersistence = "rdb"\n' + BASE)
    assert found == [f"{tmp_path / 'msightd.toml'}: [redis] key 'persistence' must be one of aof, none, got 'rdb'"]


def test_duplicate_names_unknown_kind_missing_keys(tmp_path: Path) -> None:
    text = BASE.replace('name = "agg"', 'name = "cam"') + '\n[[nodes]]\nname = "x"\nkind = "camera"\n'
    text += '\n[[nodes]]\nname = "d"\nkind = "video_local_dumper"\nsubscribe_topic = "segments"\n'
    found = "\n".join(problems(tmp_path, text))
    assert "node 'cam': duplicate name" in found
    assert "node 'x': key 'kind' must be one of rtsp, image_to_video_aggregator, video_local_dumper" in found
    assert "node 'd': missing key 'save_dir'" in found


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in problems(tmp_path, "[[nodes]\n")[0]
    with pytest.raises(ConfigFileError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_restart_policy_and_sections_are_checked(tmp_path: Path) -> None:
    found = "\n".join(
        problems(
            tmp_path,
            '[redis]\nurl = "localhost"\nport = 1\n[metrics]\nport = "x"\n[extra]\n' + BASE + 'restart = "sometimes"\n',
        )
    )
    assert "[redis] key 'url' must be a redis://" in found
    assert "[redis] unknown key 'port'" in found
    assert "[metrics]: key 'port' must be an integer" in found
    assert "unknown top-level key 'extra'" in found
    assert "node 'agg': key 'restart' must be one of 'always', 'on-failure', 'never'" in found


def test_unpublished_subscription_is_a_warning_not_an_error(tmp_path: Path) -> None:
    config = load(tmp_path, BASE.replace('subscribe_topic = "frames"', 'subscribe_topic = "nobody"'))
    assert any("'nobody' is published by no node" in w for w in config.warnings)  # type: ignore[attr-defined]


def test_redis_tls_files_and_topics(tmp_path: Path) -> None:
    text = '[redis]\nurl = "rediss://u:p@h:6380/0"\ntls_ca_cert_file = "/etc/ca.pem"\n'
    text += '[topics.frames]\ntransport = "pubsub"\n[topics.segments]\nmaxlen = 50\n' + BASE
    config = load(tmp_path, text)
    assert config.redis_tls == {"TLS_CA_CERT_FILE": "/etc/ca.pem"}  # type: ignore[attr-defined]
    agg = config.nodes[1]  # type: ignore[attr-defined]
    topics = dict(agg.topics)
    assert topics["frames"].transport == "pubsub"
    assert (topics["segments"].transport, topics["segments"].maxlen) == ("stream", 50)
    found = problems(tmp_path, '[topics.frames]\ntransport = "carrier-pigeon"\n' + BASE)
    assert any("[topics.frames]: key 'transport' must be one of 'pubsub', 'stream'" in p for p in found)


def test_a_topic_keeps_entries_per_publishing_node_unless_set(tmp_path: Path) -> None:
    second_camera = BASE.split("[[nodes]]")[1].replace('"cam"', '"cam2"').replace('"c1"', '"c2"')
    config = load(tmp_path, BASE + "[[nodes]]" + second_camera)
    for node in config.nodes:  # type: ignore[attr-defined]
        topics = dict(node.topics)
        assert topics["frames"].maxlen == 2 * STREAM_MAXLEN["frames"]  # the aggregator holds both cameras' GOPs
        assert "segments" not in topics or topics["segments"].maxlen == STREAM_MAXLEN["segments"]
    fixed = load(tmp_path, "[topics.frames]\nmaxlen = 300\n" + BASE + "[[nodes]]" + second_camera)
    assert dict(fixed.nodes[0].topics)["frames"].maxlen == 300  # type: ignore[attr-defined]


def test_shared_memory_frames_warn_about_a_small_ring_or_another_directory(tmp_path: Path) -> None:
    shm = BASE.replace('sensor_name = "c1"', 'sensor_name = "c1"\nframe_encoding = "shm"\nshm_slots = 120')
    config = load(tmp_path, shm)
    assert any("shm_slots 120 is not above what node 'agg' holds (150 frames)" in w for w in config.warnings)  # type: ignore[attr-defined]
    config = load(tmp_path, shm.replace("shm_slots = 120", "shm_slots = 160") + 'shm_dir = "/dev/shm/other"\n')
    warnings = config.warnings  # type: ignore[attr-defined]
    assert len(warnings) == 1 and "give both the same shm_dir" in warnings[0]
    assert not load(tmp_path, shm.replace("shm_slots = 120", "shm_slots = 160")).warnings  # type: ignore[attr-defined]


DUMPER = """
[[nodes]]
name = "dump"
kind = "video_local_dumper"
subscribe_topic = "segments"
save_dir = "/srv/videos"
"""


def test_retention_keys_take_sizes_percentages_and_integers(tmp_path: Path) -> None:
    config = load(tmp_path, BASE + DUMPER + 'retain_days = 7\nretain_max_size = "450GB"\nmin_free_space = "5%"\n')
    policy = config.nodes[2].options.retention_policy()  # type: ignore[attr-defined]
    assert (policy.retain_days, policy.retain_max_size, str(policy.min_free_space)) == (7, 450 * 10**9, "5%")
    config = load(
        tmp_path, BASE + DUMPER + "retain_max_size = 1000000\nmin_free_space = 2000000\nrequire_mount = true\n"
    )
    options = config.nodes[2].options  # type: ignore[attr-defined]
    assert options.retention_policy().retain_max_size == 1_000_000 and options.require_mount is True
    assert not load(tmp_path, BASE + DUMPER).nodes[2].options.retention_policy().enabled  # type: ignore[attr-defined]


def test_bad_retention_values_name_the_key(tmp_path: Path) -> None:
    assert problems(tmp_path, BASE + DUMPER + 'retain_max_size = "500G"\n') == [
        f"{tmp_path / 'msightd.toml'}: node 'dump': retain_max_size: unknown unit 'G' in '500G' "
        '(write "500GB" or "500GiB"); units: kB MB GB TB, KiB MiB GiB TiB'
    ]
    assert (
        "min_free_space must be a percentage between 0 and 100"
        in problems(tmp_path, BASE + DUMPER + 'min_free_space = "120%"\n')[0]
    )
    assert "retain_days must be > 0" in problems(tmp_path, BASE + DUMPER + "retain_days = 0\n")[0]
    assert (
        "key 'retain_max_size' must be a string or an integer"
        in problems(tmp_path, BASE + DUMPER + "retain_max_size = 1.5\n")[0]
    )


RECORDING_CAMERA = """
[[nodes]]
name = "cam"
kind = "rtsp"
url = "rtsp://x/y"
publish_topic = "stored"
sensor_name = "c1"
frame_encoding = "packets"
record_dir = "/srv/videos"
buffer_size = 50
"""


def test_a_recording_camera_needs_packets_and_a_dumper_of_its_directory(tmp_path: Path) -> None:
    dumper = DUMPER.replace('"segments"', '"stored"')
    config = load(tmp_path, RECORDING_CAMERA + dumper)
    assert not config.warnings  # type: ignore[attr-defined]
    camera = config.nodes[0]  # type: ignore[attr-defined]
    assert dict(camera.topics)["stored"].maxlen == STREAM_MAXLEN["segments"]  # notices, not frames
    elsewhere = load(tmp_path, RECORDING_CAMERA + dumper.replace("/srv/videos", "/srv/other"))
    assert any("no video_local_dumper with that save_dir subscribes" in w for w in elsewhere.warnings)  # type: ignore[attr-defined]
    aggregator = BASE.split("[[nodes]]")[2].replace('subscribe_topic = "frames"', 'subscribe_topic = "stored"')
    misread = load(tmp_path, RECORDING_CAMERA + dumper + "[[nodes]]" + aggregator)
    assert any("node 'agg' subscribes to 'stored', which carries only the notices" in w for w in misread.warnings)  # type: ignore[attr-defined]
    jpeg = problems(tmp_path, RECORDING_CAMERA.replace('"packets"', '"jpeg"') + dumper)
    assert any("record_dir records the camera's own packets" in p for p in jpeg)
    overlap = problems(tmp_path, RECORDING_CAMERA.replace("buffer_size = 50", "buffer_size = 50\noverlap_size = 50"))
    assert any("overlap_size must be >= 0 and smaller than buffer_size (50)" in p for p in overlap)


def test_the_cameras_clock_needs_msightds_reader_and_room_in_the_liveness_timeout(tmp_path: Path) -> None:
    camera_clock = RECORDING_CAMERA.replace("buffer_size = 50", 'buffer_size = 50\ncapture_clock = "camera"')
    config = load(tmp_path, camera_clock)
    assert config.nodes[0].options.capture_clock == "camera"  # type: ignore[attr-defined]
    decoding = camera_clock.replace('frame_encoding = "packets"\nrecord_dir = "/srv/videos"', 'frame_encoding = "jpeg"')
    for variant in (decoding, camera_clock + 'rtsp_reader = "ffmpeg"\n', camera_clock + 'rtsp_transport = "udp"\n'):
        found = problems(tmp_path, variant)
        assert any("capture_clock 'camera' reads the camera's RTCP sender reports" in p for p in found), found
    short = problems(tmp_path, camera_clock + "liveness_timeout_s = 10\n")
    assert any("liveness_timeout_s (10) must exceed" in p for p in short), short
    odd = problems(tmp_path, camera_clock.replace('"camera"', '"gps"'))
    assert any("capture_clock" in p and "arrival" in p for p in odd), odd
