"""Rewrite the edit list of a single-track MP4, so a stream-copied clip shows exactly the frames it should.

A clip cut without re-encoding must start at a keyframe and keep the reference frames its last B-frames
need, so it holds a few frames it should not show. An MP4 edit list (``moov/trak/edts/elst``) says which
stretches of the track's media timeline are presented; libavformat (FFmpeg, PyAV, ffprobe, mpv, VLC) and
browsers honour it. ``ffmpeg -ss ... -c copy`` hides leading frames the same way.

This module only rewrites boxes inside ``moov``; it needs ``moov`` after ``mdat`` (what libavformat's
mp4 muxer writes without ``+faststart``) so that no chunk offset moves when ``moov`` grows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_CONTAINERS = {b"moov", b"trak", b"edts", b"mdia", b"minf", b"stbl"}


class Mp4EditError(ValueError):
    """The file is not an MP4 this module can edit (the message says why)."""


@dataclass(frozen=True)
class Edit:
    """Show ``duration`` ticks of media starting at media time ``media_time``, both in the track's
    timescale (the stream's time base as muxed); media time 0 is the track's first decode time."""

    media_time: int
    duration: int


@dataclass
class _Box:
    kind: bytes
    payload: bytes  # without the 8/16-byte header
    offset: int  # where the box started in the file it was read from
    children: list[_Box] | None = None

    def encode(self) -> bytes:
        body = b"".join(child.encode() for child in self.children) if self.children is not None else self.payload
        size = len(body) + 8
        if size > 0xFFFFFFFF:
            return struct.pack(">I4sQ", 1, self.kind, size + 8) + body
        return struct.pack(">I4s", size, self.kind) + body


def _parse(data: bytes | memoryview, start: int, end: int) -> list[_Box]:
    boxes: list[_Box] = []
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, position + 8)
            header = 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise Mp4EditError(f"box {kind!r} at byte {position} has an impossible size {size}")
        box = _Box(kind, bytes(data[position + header : position + size]), position)
        if kind in _CONTAINERS:
            box.children = _parse(data, position + header, position + size)
        boxes.append(box)
        position += size
    return boxes


def _child(box: _Box, kind: bytes) -> _Box:
    for child in box.children or ():
        if child.kind == kind:
            return child
    raise Mp4EditError(f"no {kind.decode()} box inside {box.kind.decode()}")


def _header_fields(box: _Box) -> tuple[int, int]:
    """(offset of the duration field, its size) in an mvhd/tkhd payload, version 0 or 1: version+flags,
    two dates (4 or 8 bytes each), then mvhd's timescale or tkhd's track id + reserved, then duration."""
    dates = 8 if box.payload[0] == 0 else 16
    return 4 + dates + (4 if box.kind == b"mvhd" else 8), 4 if box.payload[0] == 0 else 8


def _set_duration(box: _Box, duration: int) -> None:
    at, size = _header_fields(box)
    if size == 4 and duration > 0xFFFFFFFF:
        raise Mp4EditError("clip too long for a version-0 header")
    payload = bytearray(box.payload)
    struct.pack_into(">I" if size == 4 else ">Q", payload, at, duration)
    box.payload = bytes(payload)


def _timescale(box: _Box) -> int:
    """The timescale of an mvhd or mdhd box (right after the two dates)."""
    dates = 8 if box.payload[0] == 0 else 16
    return int(struct.unpack_from(">I", box.payload, 4 + dates)[0])


def merge_edits(edits: list[Edit]) -> list[Edit]:
    """Join edits where one starts exactly where the previous ends (one edit plays everywhere; some
    players honour only the first edit of a list)."""
    merged: list[Edit] = []
    for edit in edits:
        if merged and merged[-1].media_time + merged[-1].duration == edit.media_time:
            merged[-1] = Edit(merged[-1].media_time, merged[-1].duration + edit.duration)
        else:
            merged.append(edit)
    return merged


def set_edit_list(path: Path, edits: list[Edit]) -> None:
    """Replace the edit list of the only track of ``path`` with ``edits`` (shown back to back; adjacent
    ones merged) and set the movie and track durations to their sum. The file is rewritten in place
    (callers write to a temporary name and rename it when done). Durations are converted to the movie
    timescale rounding down, which is exact when it equals the track's (open libavformat's muxer with
    ``movie_timescale`` set to the track's timescale); rounding down never hides a frame as long as a
    frame lasts more than one movie tick."""
    if not edits:
        raise Mp4EditError("an edit list needs at least one edit")
    data = path.read_bytes()
    top = _parse(data, 0, len(data))
    kinds = [box.kind for box in top]
    if b"moov" not in kinds or b"mdat" not in kinds or kinds.index(b"moov") < kinds.index(b"mdat"):
        raise Mp4EditError("moov must follow mdat (write without +faststart)")
    moov = top[kinds.index(b"moov")]
    traks = [child for child in moov.children or () if child.kind == b"trak"]
    if len(traks) != 1:
        raise Mp4EditError(f"expected one track, found {len(traks)}")
    trak = traks[0]
    mvhd, mdhd = _child(moov, b"mvhd"), _child(_child(trak, b"mdia"), b"mdhd")
    movie_scale, media_scale = _timescale(mvhd), _timescale(mdhd)
    merged = merge_edits(edits)
    durations = [edit.duration * movie_scale // media_scale for edit in merged]
    _set_duration(mvhd, sum(durations))
    _set_duration(_child(trak, b"tkhd"), sum(durations))
    elst = struct.pack(">B3xI", 1, len(merged)) + b"".join(
        struct.pack(">QqHH", duration, edit.media_time, 1, 0) for duration, edit in zip(durations, merged, strict=True)
    )
    edts = _Box(b"edts", b"", 0, [_Box(b"elst", elst, 0)])
    assert trak.children is not None
    trak.children = [child for child in trak.children if child.kind != b"edts"]
    trak.children.insert(1, edts)  # after tkhd, as ISO/IEC 14496-12 orders it
    with path.open("r+b") as file:
        file.seek(moov.offset)
        file.write(moov.encode())
        for box in top[kinds.index(b"moov") + 1 :]:
            file.write(box.encode())
        file.truncate()
