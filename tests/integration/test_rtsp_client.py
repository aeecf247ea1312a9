"""msightd's own RTSP client against a real camera (the GStreamer RTSP server, its own RTP payloaders): it
reads the same access units as FFmpeg's demuxer, authenticates as cameras ask, and says what is wrong when
it cannot read a camera; the camera node then hands that camera to FFmpeg."""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from msightd.media.capture import CaptureSettings, open_capture
from msightd.media.packets import AccessUnit, PacketCapture
from msightd.media.rtsp_capture import RtspPacketCapture
from msightd.media.rtsp_session import RtspError, RtspSession, RtspUnsupported
from msightd.nodes.keyframe_wait import NO_KEYFRAME_WARNING_S
from testbed.rtsp import RtspServer
from testbed.waiting import wait_for
from tests.support.clips import file_pictures, passthrough_clips, pictures, serve_files, write_clip
from tests.support.processes import Proc, command
from tests.support.redis import RedisEndpoint

PASSWORD = "pa:ss@w/rd"  # characters that must be percent-encoded in a URL


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return passthrough_clips(tmp_path_factory.mktemp("clips"))


def _settings(url: str, transport: str = "tcp") -> CaptureSettings:
    return CaptureSettings(url, False, transport, 10.0, 5.0, 1)


def _read(capture: PacketCapture | RtspPacketCapture, count: int) -> list[AccessUnit]:
    try:
        units = [capture.read() for _ in range(count)]
    finally:
        capture.close()
    assert all(unit is not None for unit in units), "the camera stopped sending"
    return [unit for unit in units if unit is not None]


def _camera(clip: Path, *options: str) -> RtspServer:
    server = serve_files([clip])
    server.extra_args = tuple(options)
    return server


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_own_client_reads_the_access_units_ffmpeg_reads(codec: str, clips: dict[str, Path]) -> None:
    looped = file_pictures(clips[codec], codec) * 4  # the camera loops the clip: a window may span a seam
    with serve_files([clips[codec]]) as camera:
        ffmpeg = _read(PacketCapture(_settings(camera.url)), 45)
        own = _read(RtspPacketCapture(_settings(camera.url)), 45)
    by_pictures = {pictures(codec, unit.data): unit for unit in ffmpeg}
    own_pictures = [pictures(codec, unit.data) for unit in own]
    start = looped.index(own_pictures[0])
    assert own_pictures == looped[start : start + len(own)], "frames missing, repeated or out of order"
    same = [unit for unit in own if pictures(codec, unit.data) in by_pictures]
    assert len(same) >= 10, "the two readings should overlap by a GOP at least"
    for unit in same:
        theirs = by_pictures[pictures(codec, unit.data)]
        assert unit.data == theirs.data, "access units differ byte for byte"
        assert (unit.keyframe, unit.codec, unit.width, unit.height) == (
            theirs.keyframe, theirs.codec, theirs.width, theirs.height,
        )  # fmt: skip
        assert unit.extradata == theirs.extradata
    assert any(unit.keyframe for unit in own) and not all(unit.keyframe for unit in own)
    shown = sorted(unit.pts for unit in own if unit.pts is not None)
    steps = {later - earlier for earlier, later in pairwise(shown)}
    assert steps == {9000}, f"pts should step one frame (1/10 s at 90 kHz), got {sorted(steps)}"


@pytest.mark.parametrize("scheme", ["basic", "digest"])
def test_cameras_asking_for_credentials_get_them_and_wrong_ones_are_named(scheme: str, clips: dict[str, Path]) -> None:
    with _camera(clips["h264"], "--user", "viewer", "--password", PASSWORD, "--auth", scheme) as camera:
        address = camera.url.removeprefix("rtsp://")
        right = f"rtsp://viewer:{quote(PASSWORD, safe='')}@{address}"
        assert len(_read(RtspPacketCapture(_settings(right)), 15)) == 15

        with pytest.raises(RtspError) as wrong:
            RtspPacketCapture(_settings(f"rtsp://viewer:not-it@{address}"))
        assert "refused the credentials" in str(wrong.value) and "not-it" not in str(wrong.value)
        assert not isinstance(wrong.value, RtspUnsupported), "wrong credentials are not FFmpeg's business"

        with pytest.raises(RtspError, match="needs credentials"):
            RtspPacketCapture(_settings(camera.url))


def test_a_camera_that_will_not_send_over_tcp_is_named_and_ffmpeg_reads_it_over_udp(clips: dict[str, Path]) -> None:
    with _camera(clips["h264"], "--transport", "udp") as camera:
        with pytest.raises(RtspUnsupported, match="rtsp_transport"):
            RtspPacketCapture(_settings(camera.url))
        assert len(_read(PacketCapture(_settings(camera.url, "udp")), 5)) == 5


def test_the_camera_node_hands_a_camera_its_client_cannot_read_to_ffmpeg(
    clips: dict[str, Path], redis_server: RedisEndpoint, tmp_path: Path, processes: list[Proc]
) -> None:
    with _camera(clips["h264"], "--transport", "udp") as camera:
        node = Proc(
            [
                command("msight_launch_rtsp"), "-n", "cam", "-u", camera.url, "-pt", "packets",
                "--sensor-name", "cam", "--frame-encoding", "packets", "--record-dir", str(tmp_path / "videos"),
                "--log-format", "json",
            ],
            tmp_path / "node.log",
            env={"MSIGHT_REDIS_URL": redis_server.url},
            cwd=tmp_path,
        )  # fmt: skip
        processes.append(node)
        wait_for(lambda: "source_open_failed" in node.text(), 60, "FFmpeg's attempt after the fallback")
        node.terminate()
    said = [line for line in node.text().splitlines() if '"rtsp_reader_fallback"' in line]
    assert len(said) == 1, "said once, not on every reconnect"
    assert "set rtsp_transport = 'udp'" in said[0]


SESSION_TIMEOUT_S = 2


def _reader(name: str, settings: CaptureSettings) -> Any:
    """What reads the camera: msightd's client, FFmpeg's demuxer, or a decoder (the jpeg/raw/shm paths)."""
    if name.startswith("msightd"):
        return RtspPacketCapture(settings)
    return PacketCapture(settings) if name == "ffmpeg" else open_capture(name, settings)


@pytest.mark.parametrize("reader", ["msightd", "ffmpeg", "opencv", "pyav", "msightd-silent-control"])
def test_a_camera_that_enforces_its_session_timeout_keeps_streaming_to_the_client(
    reader: str, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The camera ends a session after ``SESSION_TIMEOUT_S`` s without an RTSP request and closes its
    connection (as Axis and Hikvision cameras do; the test server's ``--session-timeout``). Every reader
    (msightd's, FFmpeg's demuxer, both decoders) reads four timeouts' worth of frames without a break. The
    control, msightd's client with its keepalives switched off, is cut off: the camera does enforce the
    timeout, so the other cases could fail."""
    silent = reader.endswith("control")
    if silent:
        monkeypatch.setattr(RtspSession, "_keep_alive", lambda _session: None)
    frames = 4 * SESSION_TIMEOUT_S * 10  # 10 fps
    with _camera(clips["h264"], "--session-timeout", str(SESSION_TIMEOUT_S)) as camera:
        capture = _reader(reader, _settings(camera.url))
        try:
            read = [capture.read() for _ in range(frames)]
        finally:
            capture.close()
    lost_reason = getattr(capture, "lost_reason", "")
    if not silent:
        assert all(item is not None for item in read), f"cut off after {read.index(None)} frames {lost_reason}"
    else:
        assert None in read and "closed the connection" in lost_reason, lost_reason
        assert read.index(None) < frames - SESSION_TIMEOUT_S * 10, "cut off only near the end"


def test_a_camera_without_keyframes_for_long_is_named_and_recorded_from_its_next_one(
    redis_server: RedisEndpoint, processes: list[Proc], tmp_path: Path
) -> None:
    """A camera with a 20-s GOP (a "smart" codec; intra refresh looks the same): the node, joining after the
    first keyframe, records nothing until the next one. It says so once ``no_keyframe`` (with the setting to
    change) after NO_KEYFRAME_WARNING_S, and ``keyframe_arrived`` when recording starts."""
    clip = write_clip(tmp_path / "long_gop.mp4", "h264", frames=200, gop=200, width=160, height=120)
    with serve_files([clip]) as camera:
        camera.wait_until_readable(timeout_s=30)  # the first client takes the first keyframe
        node = Proc(
            [
                command("msight_launch_rtsp"), "-n", "cam", "-u", camera.url, "-pt", "packets",
                "--sensor-name", "cam", "--frame-encoding", "packets", "--record-dir", str(tmp_path / "videos"),
                "--buffer-size", "10", "--log-format", "json",
            ],
            tmp_path / "node.log",
            env={"MSIGHT_REDIS_URL": redis_server.url},
            cwd=tmp_path,
        )  # fmt: skip
        processes.append(node)
        wait_for(lambda: node.has_event("keyframe_arrived"), 60, "the clip's next keyframe (it loops every 20 s)")
        node.terminate()
    warned = node.has_event("no_keyframe")
    assert len(warned) == 1, "said once per wait"
    assert warned[0]["waited_s"] >= NO_KEYFRAME_WARNING_S and "I-frame interval" in warned[0]["hint"]
    arrived = node.has_event("keyframe_arrived")[0]
    assert arrived["frames_skipped"] > warned[0]["frames_skipped"] > 0


@pytest.mark.parametrize("synced", [True, False], ids=["camera-on-ntp", "camera-without-ntp"])
def test_capture_clock_camera_stamps_frames_when_sampled_or_says_why_not(
    synced: bool, redis_server: RedisEndpoint, processes: list[Proc], tmp_path: Path
) -> None:
    """``--capture-clock camera``: the first frames wait for the camera's first RTCP sender report, then every
    frame carries the camera's time, one frame interval apart, as sampled (held frames stamped on arrival
    would share one time). A camera whose clock is not set gets arrival times (each frame its own, held or
    not), and the node says why."""
    videos = tmp_path / "videos"
    with RtspServer(width=320, height=240, fps=10, extra_args=[] if synced else ["--unsynced-clock"]) as camera:
        camera.wait_until_readable(timeout_s=30)
        started = time.time()
        node = Proc(
            [
                command("msight_launch_rtsp"), "-n", "cam", "-u", camera.url, "-pt", "packets",
                "--sensor-name", "cam", "--frame-encoding", "packets", "--capture-clock", "camera",
                "--record-dir", str(videos), "--buffer-size", "10", "--log-format", "json",
            ],
            tmp_path / "node.log",
            env={"MSIGHT_REDIS_URL": redis_server.url},
            cwd=tmp_path,
        )  # fmt: skip
        processes.append(node)
        wait_for(lambda: len(list(videos.glob("*.json"))) >= 3, 60, "three segments")
        node.terminate()
    segments = [json.loads(path.read_text()) for path in sorted(videos.glob("*.json"))]
    stamps = [frame["capture_timestamp"] for segment in segments for frame in segment["frames"]]
    assert started < stamps[0] and stamps[-1] < time.time()
    said = node.has_event("capture_clock")
    assert len(said) == 1, "said once for the connection"
    if synced:
        assert {segment["capture_clock"] for segment in segments} == {"camera"}
        assert said[0]["clock"] == "camera" and 0 <= said[0]["offset_s"] < 1
        steps = [later - earlier for earlier, later in pairwise(stamps)]
        assert steps == pytest.approx([0.1] * len(steps), abs=0.002), "sampled 1/10 s apart by the camera's clock"
    else:
        assert {segment["capture_clock"] for segment in segments} == {"arrival"}
        assert said[0]["clock"] == "arrival" and "set NTP on the camera" in said[0]["problem"]
        # the frames held for the first report keep the times they arrived, not the time they were let go
        assert stamps[19] - stamps[0] > 1.5, stamps[:20]
