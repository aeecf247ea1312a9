"""Export one sensor's frames of a time range as one MP4, by copying the segments' packets (no re-encoding).

The rule: the clip shows exactly the frames whose capture time is in ``[start, end)``, in capture order,
each once (a frame shared by overlapping segments is taken from the earlier segment). Without re-encoding a
clip can only begin at a keyframe and must keep the reference frames its last B-frames need; those extra
frames are stored in the file but hidden by an MP4 edit list (see :mod:`msightd.storage.mp4_edits`), as
``ffmpeg -ss ... -c copy`` does. Decoders that honour edit lists (FFmpeg, PyAV, browsers, VLC, mpv) show
exactly the frames in range; one that ignores them would show up to a keyframe interval more at the start.
The clip plays at the segments' frame rate: an outage is not a pause in the clip, but the clip's JSON lists
every frame with its real capture time.

Segments can only be joined when they share codec, size and codec parameters; the error names the segment
where they change, so the range can be exported in two pieces.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from msightd.storage.catalog import FrameRecord, SegmentCatalog, SegmentRecord
from msightd.storage.mp4_edits import Edit, set_edit_list
from msightd.storage.pairs import capture_clock_of, frames_of, read_metadata


class ExportError(ValueError):
    """The range cannot be exported (the message says why and what to do)."""


@dataclass(frozen=True)
class ExportResult:
    video_path: Path
    metadata_path: Path
    frame_count: int
    segments: list[str]


@dataclass
class _Piece:
    """What one segment contributes: its packets in decode order from the keyframe needed, and the
    presentation ranks ``[first, stop)`` that are shown."""

    record: SegmentRecord
    frames: list[FrameRecord]
    first: int
    stop: int
    capture_clock: str


def export_clip(catalog: SegmentCatalog, sensor: str, start: float, end: float, output: Path) -> ExportResult:
    """Write ``output`` (an MP4) and ``output`` with ``.json`` beside it; ``ExportError`` if nothing is in
    range or the segments cannot be joined. The files appear under their names only once complete."""
    if not start < end:
        raise ExportError("--from must be earlier than --to")
    pieces = _pieces(catalog, sensor, start, end)
    if not pieces:
        raise ExportError(f"no frames of sensor {sensor!r} in the range; see `msightd segments list`")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        edits = _remux(catalog.save_dir, pieces, partial)
        set_edit_list(partial, edits)
        metadata = _clip_metadata(output.name, sensor, start, end, pieces)
        metadata_path = output.with_suffix(".json")
        metadata_partial = metadata_path.with_name(f".{metadata_path.name}.partial")
        metadata_partial.write_text(json.dumps(metadata, indent=2) + "\n")
        os.replace(partial, output)
        os.replace(metadata_partial, metadata_path)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(output, metadata_path, metadata["frame_count"], [piece.record.stem for piece in pieces])


def _pieces(catalog: SegmentCatalog, sensor: str, start: float, end: float) -> list[_Piece]:
    pieces: list[_Piece] = []
    last_shown = float("-inf")
    for record in catalog.segments(sensor, start, end):
        document = read_metadata(catalog.save_dir / record.metadata_file)
        frames = frames_of(document, record.metadata_file)
        shown = [
            index
            for index, frame in enumerate(frames)
            if start <= frame.capture_timestamp < end and frame.capture_timestamp > last_shown
        ]
        if not shown:
            continue
        if shown != list(range(shown[0], shown[-1] + 1)):
            raise ExportError(f"{record.metadata_file}: frames are not in capture order; run `msightd segments verify`")
        pieces.append(_Piece(record, frames, shown[0], shown[-1] + 1, capture_clock_of(document)))
        last_shown = frames[shown[-1]].capture_timestamp
    return pieces


def _remux(save_dir: Path, pieces: list[_Piece], partial: Path) -> list[Edit]:
    """Copy each piece's packets back to back into ``partial``; return the edits that show its frames, in
    the output stream's time base, media time 0 being the first packet's decode time."""
    edits: list[tuple[int, int]] = []  # (media time, duration) in ``unit``
    output: Any = None
    try:
        out_stream: Any = None
        template: tuple[Any, ...] | None = None
        unit = Fraction(0)
        end_shown = next_dts = 0
        for piece in pieces:
            with av.open(str(save_dir / piece.record.video_file)) as source:
                stream = source.streams.video[0]
                context = stream.codec_context
                params = (context.name, stream.width, stream.height, bytes(context.extradata or b""))
                if template is None:
                    template, unit = params, Fraction(stream.time_base or 0)
                    output = av.open(
                        str(partial), mode="w", format="mp4", options={"movie_timescale": str(unit.denominator)}
                    )
                    out_stream = output.add_stream_from_template(stream)
                    out_stream.time_base = unit
                elif params != template:
                    raise ExportError(
                        f"{piece.record.video_file} differs from the segments before it (codec, size or encoder "
                        "settings): export the range in two pieces, split at its first capture time"
                    )
                packets = _packets(stream, source, Fraction(stream.time_base or 0), unit)
                if len(packets) != len(piece.frames):
                    raise ExportError(
                        f"{piece.record.video_file} holds {len(packets)} frames, its JSON lists "
                        f"{len(piece.frames)}; run `msightd segments verify`"
                    )
                selected, shown_start, shown_end = _select(packets, piece.first, piece.stop)
                shift = max(end_shown - min(pts for pts, _dts, _key, _p in selected), next_dts - selected[0][1])
                for pts, dts, _key, packet in selected:
                    packet.pts, packet.dts = pts + shift, dts + shift
                    packet.time_base = unit
                    packet.stream = out_stream
                    output.mux(packet)
                next_dts = selected[-1][1] + shift + 1
                edits.append((shown_start + shift, shown_end - shown_start))
                end_shown = shown_end + shift
        output.close()
        output_unit = Fraction(out_stream.time_base or 0)
    except BaseException:
        if output is not None:
            output.close()
        raise
    # the first piece's first packet was muxed at decode time 0, the origin of the track's media time
    return [Edit(_rescale(time, unit, output_unit), _rescale(span, unit, output_unit)) for time, span in edits]


_Packet = tuple[int, int, bool, Any]  # pts, dts (in the export's unit), keyframe, the packet


def _packets(stream: Any, source: Any, time_base: Fraction, unit: Fraction) -> list[_Packet]:
    """A segment's packets in decode order, times converted to ``unit``."""
    packets = []
    for packet in source.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        dts = packet.dts if packet.dts is not None else packet.pts
        pts = _rescale(packet.pts, time_base, unit)
        packets.append((pts, _rescale(dts, time_base, unit), packet.is_keyframe, packet))
    return packets


def _select(packets: list[_Packet], first: int, stop: int) -> tuple[list[_Packet], int, int]:
    """The packets needed to show presentation ranks ``[first, stop)``: from the last keyframe at or before
    ``first`` to the last packet (in decode order) of a shown frame. Returns them with the shown span's
    start and end presentation times."""
    by_pts = sorted(range(len(packets)), key=lambda index: packets[index][0])
    rank = {index: position for position, index in enumerate(by_pts)}
    keyframes = [index for index in range(len(packets)) if packets[index][2] and rank[index] <= first]
    shown = [index for index in range(len(packets)) if first <= rank[index] < stop]
    if not keyframes or min(shown) < keyframes[-1]:
        raise ExportError("a segment's frames cannot be cut without re-encoding (no keyframe before them)")
    start_pts = packets[by_pts[first]][0]
    if stop < len(packets):
        end_pts = packets[by_pts[stop]][0]
    else:
        last = packets[by_pts[stop - 1]]
        end_pts = last[0] + (last[3].duration or _frame_step(packets, by_pts))
    return packets[keyframes[-1] : max(shown) + 1], start_pts, end_pts


def _frame_step(packets: list[_Packet], by_pts: list[int]) -> int:
    if len(by_pts) < 2:
        return 1
    return packets[by_pts[-1]][0] - packets[by_pts[-2]][0]


def _rescale(ticks: int, source: Fraction, target: Fraction) -> int:
    return ticks if source == target else round(ticks * source / target)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")


def _clip_metadata(video_file: str, sensor: str, start: float, end: float, pieces: list[_Piece]) -> dict[str, Any]:
    """The clip's JSON: what it covers and every frame it shows, with the segment it came from. Its keys
    differ from a segment's on purpose, so a clip is never mistaken for a segment."""
    frames = [
        {
            "frame_id": frame.frame_id,
            "capture_timestamp": frame.capture_timestamp,
            "capture_time": _iso(frame.capture_timestamp),
            "segment": piece.record.stem,
        }
        for piece in pieces
        for frame in piece.frames[piece.first : piece.stop]
    ]
    record = pieces[0].record
    clocks = {piece.capture_clock for piece in pieces}
    return {
        "clip_file": video_file,
        "sensor_name": sensor,
        "range_start_timestamp": start,
        "range_end_timestamp": end,
        "range_start_time": _iso(start),
        "range_end_time": _iso(end),
        "frame_count": len(frames),
        "first_capture_timestamp": frames[0]["capture_timestamp"],
        "last_capture_timestamp": frames[-1]["capture_timestamp"],
        "codec": record.codec,
        "width": record.width,
        "height": record.height,
        "fps": record.fps,
        # whose clock the capture times are, as in the segments' JSON ("mixed": see each frame's segment)
        "capture_clock": clocks.pop() if len(clocks) == 1 else "mixed",
        "source_segments": [piece.record.stem for piece in pieces],
        "clip_frames": frames,
        "time_zone": "UTC",
    }
