"""``msightd segments list|gaps|export|verify|reindex``: look at, check and cut what a dumper recorded.

Read commands use the save directory's catalog when there is one and never create it (a catalog created
by another user, e.g. root, could lock the dumper out of it): without one they read the JSON files and
say so. ``reindex`` (re)builds it. Media code (PyAV) is imported only by ``export`` and ``verify``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from msightd.storage.catalog import CatalogCorrupt, SegmentCatalog, SegmentRecord, catalog_path
from msightd.storage.sizes import format_size

EXIT_OK = 0
EXIT_FOUND_PROBLEMS = 1
EXIT_USAGE = 2
_EPOCH = re.compile(r"^\s*\d+(\.\d*)?\s*$")
TIME_HELP = "ISO 8601 (e.g. 2026-12-01T08:30:00; no zone means UTC) or epoch seconds"


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit 2."""


def parse_time(text: str) -> float:
    """Epoch seconds from epoch seconds or ISO 8601 (a time without zone is UTC)."""
    if _EPOCH.match(text):
        return float(text)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: use {TIME_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``segments`` and its subcommands to ``commands`` (the ``msightd`` parser's subparsers). Each
    subcommand sets ``handler(args) -> exit code``."""
    segments = commands.add_parser(
        "segments",
        help="list, find gaps in, export, verify or reindex recorded segments",
        description=f"Recorded segments of a save directory. Times: {TIME_HELP}.",
    )
    sub = segments.add_subparsers(dest="segments_command", required=True)

    def common(name: str, help_text: str, ranged: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--save-dir", required=True, type=Path, help="the dumper's save_dir")
        if ranged:
            parser.add_argument("--sensor", help="only this sensor_name")
            parser.add_argument("--from", dest="start", type=parse_time, help=f"range start, inclusive; {TIME_HELP}")
            parser.add_argument("--to", dest="end", type=parse_time, help=f"range end, exclusive; {TIME_HELP}")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        return parser

    listing = common("list", "segments, oldest first capture first, with a total per sensor")
    listing.set_defaults(handler=_guarded(cmd_list))
    gaps = common("gaps", "spans with no frames, per sensor, from the per-frame capture times")
    gaps.add_argument(
        "--min-periods",
        type=float,
        default=5.0,
        help="report spans longer than this many frame periods (1/fps; default 5)",
    )
    gaps.set_defaults(handler=_guarded(cmd_gaps))
    export = common(
        "export",
        "one MP4 of the frames captured in [--from, --to), joined without re-encoding, with a JSON of its frames",
    )
    export.add_argument("-o", "--output", required=True, type=Path, help="clip file (.mp4); its JSON goes beside")
    export.set_defaults(handler=_guarded(cmd_export))
    verify = common("verify", "check every pair: SHA-256, decodes, frame count; exit 1 naming bad pairs")
    verify.add_argument("--no-decode", action="store_true", help="skip decoding (hash and JSON checks only)")
    verify.set_defaults(handler=_guarded(cmd_verify))
    reindex = common("reindex", "rebuild the catalog from the JSON files", ranged=False)
    reindex.set_defaults(handler=_guarded(cmd_reindex))
    return segments


def main(argv: Sequence[str] | None = None) -> int:
    """``msightd segments ...`` on its own (``msightd`` wires :func:`build_parser` into its own parser)."""
    parser = argparse.ArgumentParser(prog="msightd")
    build_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The handler, with bad input turned into one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except UsageError as exc:
            print(f"msightd segments {args.segments_command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


# -- opening -------------------------------------------------------------------------------------


def open_for_reading(save_dir: Path) -> SegmentCatalog:
    """The catalog of ``save_dir`` if it has a usable one, else one read from the JSON files (said on
    stderr)."""
    if not save_dir.is_dir():
        raise UsageError(f"save directory {save_dir} does not exist")
    reason = "no catalog yet"
    if catalog_path(save_dir).exists():
        try:
            return SegmentCatalog(save_dir)
        except (CatalogCorrupt, OSError) as exc:
            reason = f"catalog unusable ({exc})"
    catalog, problems = SegmentCatalog.scan(save_dir)
    print(
        f"msightd segments: {reason}; read the JSON files in {save_dir} "
        f"(`msightd segments reindex --save-dir {save_dir}` builds the catalog)",
        file=sys.stderr,
    )
    _report_skipped(problems)
    return catalog


def _report_skipped(problems: list[str]) -> None:
    if problems:
        print(f"msightd segments: skipped {len(problems)} unusable JSON files (first: {problems[0]})", file=sys.stderr)


def _check_range(args: argparse.Namespace) -> None:
    if args.start is not None and args.end is not None and not args.start < args.end:
        raise UsageError(f"--from ({iso(args.start)}) must be earlier than --to ({iso(args.end)})")


def _record_json(record: SegmentRecord) -> dict[str, Any]:
    document = asdict(record)
    document["first_capture_time"] = iso(record.first_capture_timestamp)
    document["last_capture_time"] = iso(record.last_capture_timestamp)
    document["uploaded_time"] = iso(record.uploaded_at)
    return document


# -- commands ------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    _check_range(args)
    with open_for_reading(args.save_dir) as catalog:
        records = catalog.segments(args.sensor, args.start, args.end)
    if args.json:
        print(json.dumps([_record_json(record) for record in records], indent=2))
        return EXIT_OK
    print(f"{'SENSOR':<20} {'FIRST CAPTURE (UTC)':<24} {'LAST CAPTURE (UTC)':<24} {'FRAMES':>6} {'SIZE':>9}  FILE")
    per_sensor: dict[str, list[int]] = {}
    for record in records:
        print(
            f"{record.sensor_name:<20} {iso(record.first_capture_timestamp):<24} "
            f"{iso(record.last_capture_timestamp):<24} {record.frame_count:>6} "
            f"{format_size(record.size_bytes):>9}  {record.video_file}" + ("" if record.uploaded_at is None else "  up")
        )
        totals = per_sensor.setdefault(record.sensor_name, [0, 0])
        totals[0] += 1
        totals[1] += record.size_bytes
    for sensor, (count, size) in sorted(per_sensor.items()):
        print(f"{sensor}: {count} segments, {format_size(size)}")
    if not records:
        print("no segments" + (" in the range" if args.start is not None or args.end is not None else ""))
    return EXIT_OK


def cmd_gaps(args: argparse.Namespace) -> int:
    from msightd.storage.gaps import find_gaps

    _check_range(args)
    if not args.min_periods > 0:
        raise UsageError(f"--min-periods must be > 0, got {args.min_periods}")
    with open_for_reading(args.save_dir) as catalog:
        gaps = find_gaps(catalog, args.sensor, args.start, args.end, args.min_periods, now=time.time())
    if args.json:
        rows = [
            {
                "sensor_name": gap.sensor_name,
                "start_timestamp": gap.start,
                "end_timestamp": gap.end,
                "start_time": iso(gap.start),
                "end_time": iso(gap.end),
                "duration_s": round(gap.duration_s, 6),
                "missing_frames": gap.missing_frames,
            }
            for gap in gaps
        ]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'SENSOR':<20} {'LAST FRAME BEFORE (UTC)':<24} {'FIRST FRAME AFTER':<24} {'SECONDS':>9} {'MISSING':>8}")
    for gap in gaps:
        print(
            f"{gap.sensor_name:<20} {iso(gap.start):<24} {iso(gap.end):<24} "
            f"{gap.duration_s:>9.3f} {gap.missing_frames:>8}"
        )
    print(f"{len(gaps)} gaps longer than {args.min_periods:g} frame periods")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from msightd.storage.export import ExportError, export_clip

    if args.start is None or args.end is None:
        raise UsageError("export needs --from and --to")
    _check_range(args)
    output: Path = args.output.absolute()
    if output.suffix.lower() != ".mp4":
        raise UsageError(f"--output {output} must end in .mp4")
    if output.parent.resolve() == args.save_dir.resolve():
        raise UsageError("write the clip outside the save directory (retention and the catalog own that one)")
    with open_for_reading(args.save_dir) as catalog:
        sensor = args.sensor
        if sensor is None:
            sensors = sorted({record.sensor_name for record in catalog.segments(None, args.start, args.end)})
            if len(sensors) != 1:
                raise UsageError(
                    f"the range holds {len(sensors)} sensors ({', '.join(sensors) or 'none'}); pick one with --sensor"
                )
            sensor = sensors[0]
        try:
            result = export_clip(catalog, sensor, args.start, args.end, output)
        except ExportError as exc:
            raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(asdict(result), default=str))
    else:
        print(
            f"wrote {result.video_path} ({result.frame_count} frames of {sensor} from {len(result.segments)} "
            f"segments) and {result.metadata_path.name}"
        )
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from msightd.storage.verify import incomplete_videos, verify_save_dir

    _check_range(args)
    if not args.save_dir.is_dir():
        raise UsageError(f"save directory {args.save_dir} does not exist")
    checked = bad = 0
    rows = []
    for check in verify_save_dir(args.save_dir, args.sensor, args.start, args.end, decode=not args.no_decode):
        checked += 1
        bad += not check.ok
        if args.json:
            rows.append({"stem": check.stem, "ok": check.ok, "problems": list(check.problems)})
        elif not check.ok:
            print(f"BAD {check.stem}: {'; '.join(check.problems)}")
    incomplete = incomplete_videos(args.save_dir)
    if args.json:
        print(json.dumps({"checked": checked, "bad": bad, "pairs": rows, "incomplete_videos": incomplete}, indent=2))
    else:
        for name in incomplete:
            print(f"INCOMPLETE {name}: no JSON (a write or deletion was interrupted; retention removes it)")
        print(f"{checked} pairs checked, {bad} bad, {len(incomplete)} incomplete videos")
    return EXIT_FOUND_PROBLEMS if bad else EXIT_OK


class _StderrLog:
    """What :meth:`SegmentCatalog.open_or_rebuild` logs, as lines on stderr."""

    def _print(self, event: str, **fields: Any) -> None:
        print(f"msightd segments: {fields.get('msg') or event.replace('_', ' ')}", file=sys.stderr)

    info = warning = error = _print


def cmd_reindex(args: argparse.Namespace) -> int:
    save_dir: Path = args.save_dir
    if not save_dir.is_dir():
        raise UsageError(f"save directory {save_dir} does not exist")
    try:
        catalog = SegmentCatalog.open_or_rebuild(save_dir, _StderrLog(), full_rebuild=True)
    except OSError as exc:
        raise UsageError(f"cannot write the catalog in {save_dir}: {exc}") from None
    with catalog:
        count, _size = catalog.totals()
    _give_to_owner(save_dir)
    if args.json:
        print(json.dumps({"segments": count, "catalog": str(catalog_path(save_dir))}))
    else:
        print(f"catalog {catalog_path(save_dir)}: {count} segments")
    return EXIT_OK


def _give_to_owner(save_dir: Path) -> None:
    """Run as root, hand the catalog files to the save directory's owner (the dumper's user) so the
    dumper can keep writing them."""
    if os.geteuid() != 0:
        return
    owner = save_dir.stat()
    directory = catalog_path(save_dir).parent
    for path in [directory, *directory.iterdir()]:
        os.chown(path, owner.st_uid, owner.st_gid)
