"""The part of an RTSP camera's SDP (RFC 8866) a recorder needs: its video track.

Which codec and clock rate the video's RTP payload type carries (``a=rtpmap``), the parameter sets sent out
of band (``sprop-parameter-sets`` for H.264, ``sprop-vps``/``-sps``/``-pps`` for H.265, in ``a=fmtp``), the
track's control URL and the nominal frame rate if the camera states one. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urljoin

from msightd.media import nal

#: rtpmap encoding names -> codec names as FFmpeg spells them.
_ENCODINGS = {"H264": nal.H264, "H265": nal.HEVC}
_SPROP_KEYS = {nal.H264: ("sprop-parameter-sets",), nal.HEVC: ("sprop-vps", "sprop-sps", "sprop-pps")}


class SdpError(ValueError):
    """The description has no video track this recorder can read (the message says what it found)."""


@dataclass(frozen=True)
class VideoTrack:
    codec: str  # "h264" or "hevc"
    payload_type: int
    clock_rate: int
    control_url: str
    parameter_sets: tuple[bytes, ...]  # out of band, from the fmtp line (may be empty: then in-band only)
    frame_rate: float  # 0 when not stated


def video_track(sdp: str, base_url: str) -> VideoTrack:
    """The first video track of ``sdp``; ``base_url`` resolves a relative control URL (Content-Base, else
    the URL described). :raises SdpError: no video track, or one in a codec other than H.264/H.265."""
    media = _video_section(sdp)
    if media is None:
        raise SdpError("the camera's stream description has no video track")
    header, attributes = media
    formats = header.split()[3:]
    rtpmap: dict[str, str] = {}
    fmtp: dict[str, str] = {}
    control = ""
    frame_rate = 0.0
    for name, value in attributes:
        if name == "rtpmap":
            payload, _, encoding = value.partition(" ")
            rtpmap[payload] = encoding.strip()
        elif name == "fmtp":
            payload, _, parameters = value.partition(" ")
            fmtp[payload] = parameters.strip()
        elif name == "control":
            control = value.strip()
        elif name == "framerate":
            frame_rate = _float(value)
    for payload in formats:
        encoding, _, rate = rtpmap.get(payload, "").partition("/")
        codec = _ENCODINGS.get(encoding.upper())
        if codec is not None:
            return VideoTrack(
                codec=codec,
                payload_type=int(payload),
                clock_rate=int(rate.partition("/")[0] or 90000),
                control_url=_control_url(control, base_url),
                parameter_sets=_parameter_sets(codec, fmtp.get(payload, "")),
                frame_rate=frame_rate,
            )
    found = ", ".join(rtpmap.get(p, f"payload type {p}") for p in formats) or "nothing"
    raise SdpError(f"the camera's video is {found}, not H.264/H.265")


def session_control_url(sdp: str, base_url: str) -> str:
    """The URL that PLAY and TEARDOWN address: the session-level ``a=control`` (before the first ``m=``
    line), else the base."""
    for line in sdp.splitlines():
        if line.startswith("m="):
            break
        if line.startswith("a=control:"):
            return _control_url(line.removeprefix("a=control:").strip(), base_url)
    return base_url


def _video_section(sdp: str) -> tuple[str, list[tuple[str, str]]] | None:
    header = None
    attributes: list[tuple[str, str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            if header is not None:
                break
            if line.startswith("m=video"):
                header = line[2:]
        elif header is not None and line.startswith("a="):
            name, _, value = line[2:].partition(":")
            attributes.append((name.strip().lower(), value))
    return None if header is None else (header, attributes)


def _control_url(control: str, base_url: str) -> str:
    """RFC 2326 C.1.1: absolute as given, ``*`` is the base, relative resolves against the base (FFmpeg and
    live555 append it to the base as a path segment, which cameras expect)."""
    if not control or control == "*":
        return base_url
    if "://" in control:
        return control
    return urljoin(base_url if base_url.endswith("/") else base_url + "/", control)


def _parameter_sets(codec: str, fmtp: str) -> tuple[bytes, ...]:
    values = {}
    for item in fmtp.split(";"):
        key, _, value = item.strip().partition("=")
        values[key.strip().lower()] = value.strip()
    found = []
    for key in _SPROP_KEYS[codec]:
        for encoded in filter(None, values.get(key, "").split(",")):
            try:
                found.append(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
            except (binascii.Error, ValueError):
                continue  # a garbled sprop: the in-band copies will do
    return tuple(unit for unit in found if unit)


def _float(value: str) -> float:
    try:
        return max(float(value.strip()), 0.0)
    except ValueError:
        return 0.0
