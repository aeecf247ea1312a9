"""Which segment pairs to delete, and deleting them so that a crash never leaves a half pair that looks whole.

Three limits, each optional (:class:`RetentionPolicy`): an age (``retain_days``), a total size of the save
directory's pairs (``retain_max_size``) and free space to keep on its filesystem (``min_free_space``).
:func:`plan_deletions` is pure: given the catalog's rows, the disk usage and the time, it picks pairs
oldest first capture first, and never

* a sensor's newest pair (a camera that stopped keeps its last footage, and the newest is what an
  operator looks at first), nor a pair being written (it has no JSON and no row yet, so retention cannot
  see it; callers may protect more stems);
* for age or size, a pair not yet uploaded while an uploader is declared (``uploads_required``); only the
  free-space floor may take those, last, as ``free_space_not_uploaded``.

:class:`SegmentDeleter` removes the chosen pairs: every JSON first (a lone MP4 is, by definition,
incomplete: the writer lands the MP4 before its JSON), the directory fsynced, then the MP4s, the directory
fsynced again, then the catalog rows. A crash at any point leaves whole pairs and at most some lone MP4s,
which :func:`remove_orphan_videos` sweeps later.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from msightd.storage.catalog import EventLog, SegmentCatalog, SegmentRecord, is_segment_video
from msightd.storage.files import fsync_dir
from msightd.storage.sizes import SpaceFloor, format_size, parse_size, parse_space_floor

DAY_S = 86400.0
REASONS = ("age", "size", "free_space", "free_space_not_uploaded")
#: A lone MP4 younger than this may be a pair whose JSON is being written right now.
ORPHAN_GRACE_S = 60.0


@dataclass(frozen=True)
class RetentionPolicy:
    """The limits of one save directory; ``None`` = no such limit."""

    retain_days: float | None = None
    retain_max_size: int | None = None
    min_free_space: SpaceFloor | None = None

    @property
    def enabled(self) -> bool:
        return self.retain_days is not None or self.retain_max_size is not None or self.min_free_space is not None

    @classmethod
    def parse(
        cls, retain_days: float | None, retain_max_size: object | None, min_free_space: object | None
    ) -> RetentionPolicy:
        """From option values (``ValueError`` naming the option when one is unusable)."""
        if retain_days is not None and not retain_days > 0:
            raise ValueError(f"retain_days must be > 0 (days, fractions allowed), got {retain_days!r}")
        max_size = parse_size(retain_max_size, "retain_max_size") if retain_max_size is not None else None
        if max_size == 0:
            raise ValueError("retain_max_size must be > 0 bytes")
        floor = parse_space_floor(min_free_space) if min_free_space is not None else None
        return cls(retain_days, max_size, floor)

    def describe(self) -> str:
        parts = []
        if self.retain_days is not None:
            parts.append(f"retain_days={self.retain_days:g}")
        if self.retain_max_size is not None:
            parts.append(f"retain_max_size={format_size(self.retain_max_size)}")
        if self.min_free_space is not None:
            parts.append(f"min_free_space={self.min_free_space}")
        return ", ".join(parts) or "off"


@dataclass(frozen=True)
class DiskUsage:
    """The save directory's filesystem: its size and the space an unprivileged writer may still use."""

    total_bytes: int
    free_bytes: int

    @classmethod
    def of(cls, path: Path) -> DiskUsage:
        stat = os.statvfs(path)
        return cls(stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize)


@dataclass(frozen=True)
class Deletion:
    record: SegmentRecord
    reason: str


@dataclass(frozen=True)
class RetentionPlan:
    deletions: list[Deletion]
    #: Bytes still missing to reach the free-space floor once every deletable pair is gone.
    free_space_shortfall_bytes: int = 0


def plan_deletions(
    records: Iterable[SegmentRecord],
    policy: RetentionPolicy,
    usage: DiskUsage,
    now: float,
    uploads_required: bool = False,
    protected_stems: Collection[str] = (),
    newest_stems: Collection[str] | None = None,
    total_bytes: int | None = None,
) -> RetentionPlan:
    """Pick the pairs to delete now, oldest first capture first, with the reason each goes.

    Age applies to a pair whose last frame is older than ``retain_days``; size deletes the oldest until the
    pairs' total is at most ``retain_max_size``; the free-space floor deletes the oldest until the
    filesystem's free space (counting what this plan already frees) reaches it: uploaded pairs first,
    pairs not yet uploaded only when nothing else is left.

    ``records`` may be every pair, or only the oldest ones (a catalog of months holds millions of rows):
    then ``newest_stems`` (each sensor's newest pair) and ``total_bytes`` (of every pair) must be given,
    and the plan can only pick among the records given."""
    ordered = sorted(records, key=lambda record: (record.first_capture_timestamp, record.stem))
    if newest_stems is None:
        newest = {record.sensor_name: record.stem for record in ordered}
        newest_stems = set(newest.values())
    keep = set(newest_stems) | set(protected_stems)
    candidates = [record for record in ordered if record.stem not in keep]
    chosen: dict[str, Deletion] = {}

    def take(record: SegmentRecord, reason: str) -> None:
        chosen[record.stem] = Deletion(record, reason)

    def may_expire(record: SegmentRecord) -> bool:
        return record.stem not in chosen and (not uploads_required or record.uploaded_at is not None)

    if policy.retain_days is not None:
        cutoff = now - policy.retain_days * DAY_S
        for record in candidates:
            if record.last_capture_timestamp < cutoff and may_expire(record):
                take(record, "age")
    if policy.retain_max_size is not None:
        total = sum(record.size_bytes for record in ordered) if total_bytes is None else total_bytes
        total -= _freed(chosen)
        for record in candidates:
            if total <= policy.retain_max_size:
                break
            if may_expire(record):
                take(record, "size")
                total -= record.size_bytes
    shortfall = 0
    if policy.min_free_space is not None:
        missing = policy.min_free_space.bytes_for(usage.total_bytes) - usage.free_bytes - _freed(chosen)
        uploaded_first = sorted(candidates, key=lambda record: record.uploaded_at is None and uploads_required)
        for record in uploaded_first:
            if missing <= 0:
                break
            if record.stem in chosen:
                continue
            not_uploaded = uploads_required and record.uploaded_at is None
            take(record, "free_space_not_uploaded" if not_uploaded else "free_space")
            missing -= record.size_bytes
        shortfall = max(0, missing)
    deletions = sorted(chosen.values(), key=lambda item: (item.record.first_capture_timestamp, item.record.stem))
    return RetentionPlan(deletions, shortfall)


def _freed(chosen: dict[str, Deletion]) -> int:
    return sum(item.record.size_bytes for item in chosen.values())


@dataclass
class DeletionResult:
    """What one round removed: pairs and bytes per reason (reasons in :data:`REASONS`)."""

    segments: dict[str, int] = field(default_factory=dict)
    size_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def total_segments(self) -> int:
        return sum(self.segments.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.size_bytes.values())

    def count(self, deletion: Deletion) -> None:
        self.segments[deletion.reason] = self.segments.get(deletion.reason, 0) + 1
        self.size_bytes[deletion.reason] = self.size_bytes.get(deletion.reason, 0) + deletion.record.size_bytes


class SegmentDeleter:
    """Deletes planned pairs from one save directory and its catalog, in the crash-safe order (see the
    module docstring), and logs one line per round. One owner thread."""

    def __init__(self, save_dir: Path, catalog: SegmentCatalog, log: EventLog) -> None:
        self._save_dir = save_dir
        self._catalog = catalog
        self._log = log

    def delete(self, deletions: list[Deletion], emergency: bool = False) -> DeletionResult:
        """Remove the pairs (a file already gone counts as removed). ``OSError`` if the directory cannot
        be changed; pairs whose JSON was removed before the error stay lone MP4s, swept later."""
        result = DeletionResult()
        if not deletions:
            return result
        for deletion in deletions:
            (self._save_dir / deletion.record.metadata_file).unlink(missing_ok=True)
        fsync_dir(self._save_dir)
        for deletion in deletions:
            (self._save_dir / deletion.record.video_file).unlink(missing_ok=True)
            result.count(deletion)
        fsync_dir(self._save_dir)
        self._catalog.remove_many([deletion.record.stem for deletion in deletions])
        self._log_round(deletions, result, emergency)
        return result

    def _log_round(self, deletions: list[Deletion], result: DeletionResult, emergency: bool) -> None:
        reason = "+".join(name for name in REASONS if name in result.segments)
        fields = {
            "segments": result.total_segments,
            "size_bytes": result.total_bytes,
            "reason": reason,
            "by_reason": {name: [result.segments[name], result.size_bytes[name]] for name in result.segments},
            "oldest_deleted": deletions[0].record.stem,
            "newest_deleted": deletions[-1].record.stem,
            "emergency": emergency,
        }
        text = (
            f"retention deleted {result.total_segments} segments ({format_size(result.total_bytes)}) "
            f"for {reason}" + (" to make room on a full disk" if emergency else "")
        )
        not_uploaded = result.segments.get("free_space_not_uploaded", 0)
        if not_uploaded:
            self._log.error(
                "segments_deleted",
                msg=f"{text}; {not_uploaded} of them were NOT uploaded yet (free space below the floor): "
                "the uploader is behind, raise min_free_space headroom or fix the upload",
                **fields,
            )
        elif emergency:
            self._log.warning("segments_deleted", msg=text, **fields)
        else:
            self._log.info("segments_deleted", msg=text, **fields)


def remove_orphan_videos(save_dir: Path, grace_s: float = ORPHAN_GRACE_S, now: float | None = None) -> list[str]:
    """Delete segment MP4s that have no JSON and are older than ``grace_s`` (left by a crash in the
    middle of a deletion round, or of a write that will not be retried). Returns their names."""
    now = time.time() if now is None else now
    removed = []
    for entry in os.scandir(save_dir):
        if not is_segment_video(entry.name) or os.path.exists(os.path.join(save_dir, entry.name[:-4] + ".json")):
            continue
        try:
            if now - entry.stat().st_mtime < grace_s:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(entry.name)
    if removed:
        fsync_dir(save_dir)
    return removed
