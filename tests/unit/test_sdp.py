"""The video track of a camera's SDP: codec, clock, out-of-band parameter sets, control URL."""

from __future__ import annotations

import base64

import pytest

from msightd.media.sdp import SdpError, session_control_url, video_track

SPS, PPS = b"\x67\x42\xc0\x1e\xda\x02\x80", b"\x68\xce\x3c\x80"
VPS, HEVC_SPS, HEVC_PPS = b"\x40\x01\x0c\x01", b"\x42\x01\x01\x01", b"\x44\x01\xc1\x72"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def description(*media: str, session_control: str = "") -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=camera", "t=0 0"]
    if session_control:
        lines.append(f"a=control:{session_control}")
    return "\r\n".join(lines + [line for block in media for line in block.splitlines()]) + "\r\n"


AUDIO = "m=audio 0 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=control:trackID=0"
H264 = (
    f"m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    f"a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets={b64(SPS)},{b64(PPS)}\n"
    "a=control:stream=1\na=framerate:12.5"
)


def test_an_h264_track_after_an_audio_one_with_its_parameter_sets_and_relative_control() -> None:
    track = video_track(description(AUDIO, H264), "rtsp://cam.local/live/")
    assert (track.codec, track.payload_type, track.clock_rate) == ("h264", 96, 90000)
    assert track.parameter_sets == (SPS, PPS)
    assert track.control_url == "rtsp://cam.local/live/stream=1"
    assert track.frame_rate == 12.5


def test_a_relative_control_joins_a_base_without_trailing_slash_as_a_path_segment() -> None:
    assert (
        video_track(description(H264), "rtsp://cam.local/live.sdp").control_url == "rtsp://cam.local/live.sdp/stream=1"
    )


def test_absolute_and_star_controls_and_the_session_level_one() -> None:
    absolute = H264.replace("a=control:stream=1", "a=control:rtsp://10.0.0.9/other/track1")
    assert video_track(description(absolute), "rtsp://cam/x").control_url == "rtsp://10.0.0.9/other/track1"
    star = H264.replace("a=control:stream=1", "a=control:*")
    assert video_track(description(star), "rtsp://cam/x").control_url == "rtsp://cam/x"
    assert session_control_url(description(H264, session_control="*"), "rtsp://cam/x/") == "rtsp://cam/x/"
    assert session_control_url(description(H264), "rtsp://cam/x") == "rtsp://cam/x"


def test_an_h265_track_carries_vps_sps_and_pps_without_padding() -> None:
    hevc = (
        "m=video 0 RTP/AVP 98\na=rtpmap:98 H265/90000\n"
        f"a=fmtp:98 sprop-vps={b64(VPS).rstrip('=')}; sprop-sps={b64(HEVC_SPS)}; sprop-pps={b64(HEVC_PPS)}\n"
        "a=control:track1"
    )
    track = video_track(description(hevc), "rtsp://cam/")
    assert (track.codec, track.payload_type, track.parameter_sets) == ("hevc", 98, (VPS, HEVC_SPS, HEVC_PPS))
    assert track.frame_rate == 0


def test_no_video_or_a_codec_other_than_h264_h265_is_named() -> None:
    with pytest.raises(SdpError, match="no video track"):
        video_track(description(AUDIO), "rtsp://cam/")
    mjpeg = "m=video 0 RTP/AVP 26\na=rtpmap:26 JPEG/90000\na=control:track1"
    with pytest.raises(SdpError, match=r"JPEG/90000, not H\.264/H\.265"):
        video_track(description(mjpeg), "rtsp://cam/")


def test_garbled_parameter_sets_leave_the_in_band_ones_to_do() -> None:
    garbled = H264.replace(f"sprop-parameter-sets={b64(SPS)}", "sprop-parameter-sets=@@notbase64")
    assert video_track(description(garbled), "rtsp://cam/").parameter_sets == (PPS,)
