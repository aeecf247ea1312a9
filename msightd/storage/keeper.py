"""The dumper's bookkeeping of one save directory: catalog rows, retention rounds and the storage gauges.

The dumper calls :meth:`StorageKeeper.written` right after a pair's JSON is durable (the row follows the
files), :meth:`StorageKeeper.tick` from its housekeeping, and :meth:`StorageKeeper.make_room` when a write
fails with a full disk. Retention runs every ``interval_s`` (age), and at once after a write that takes the
directory over ``retain_max_size`` or the filesystem under ``min_free_space`` (so that a fast writer on a
small disk never reaches ENOSPC between two rounds). The dumper writes from the same thread, so a round
never races a write: the pair being written has no row yet and is invisible to retention.

The catalog is an index, not the truth: if it cannot be written (its own disk full, a lock held too long),
the failure is logged once, and the next tick reconciles it with the files.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from msightd.metrics import NodeMetrics
from msightd.nodes.runtime import LogThrottle
from msightd.storage.catalog import EventLog, MetadataError, SegmentCatalog, record_from_metadata
from msightd.storage.retention import (
    DiskUsage,
    RetentionPolicy,
    SegmentDeleter,
    plan_deletions,
    remove_orphan_videos,
)
from msightd.storage.sizes import SpaceFloor, format_size

#: How often retention and the storage gauges are refreshed without a write asking for it.
RETENTION_INTERVAL_S = 5.0
#: Free space an emergency round (a write failed with ENOSPC) makes at least, beyond the segment waiting.
EMERGENCY_HEADROOM_BYTES = 1 << 20
#: A full disk is said at most once per this long (every round that deletes still logs its line).
EMERGENCY_LOG_INTERVAL_S = 3600.0
#: Oldest pairs one round looks at (per upload state); a round that deletes some is followed by another.
ROUND_BATCH = 500
#: Rounds in a row at most, so a huge backlog of deletions cannot stall the writer for long.
MAX_ROUNDS = 20


class StorageKeeper:
    """Catalog + retention for one save directory. One owner thread (the dumper's)."""

    def __init__(
        self,
        save_dir: Path,
        policy: RetentionPolicy,
        log: EventLog,
        metrics: NodeMetrics,
        interval_s: float = RETENTION_INTERVAL_S,
    ) -> None:
        self.save_dir = save_dir
        self.policy = policy
        self._log = log
        self._metrics = metrics
        self._interval_s = interval_s
        self._catalog: SegmentCatalog | None = None
        self._deleter: SegmentDeleter | None = None
        self._next_round = 0.0
        self._used_bytes = 0
        self._newest: dict[str, tuple[float, str]] = {}  # sensor -> (first capture, stem) of its newest pair
        self._needs_reconcile = False
        self._catalog_failing = False
        self._shortfall_said = False
        self._emergency_log = LogThrottle(EMERGENCY_LOG_INTERVAL_S)

    @property
    def catalog(self) -> SegmentCatalog | None:
        return self._catalog

    def open(self) -> bool:
        """Open the catalog (rebuilt if missing or corrupt, else reconciled with the files) and sweep lone
        MP4s left by a crash. A catalog that cannot be opened (a file of another user, a failing disk) must
        not stop recording: that is logged once, segments are written unindexed, retention waits, and
        :meth:`tick` tries again. Returns whether the catalog is open."""
        if self._catalog is not None:
            return True
        try:
            catalog = SegmentCatalog.open_or_rebuild(self.save_dir, self._log)
        except (OSError, sqlite3.Error) as exc:
            self._catalog_failed(exc)
            return False
        self._catalog = catalog
        self._deleter = SegmentDeleter(self.save_dir, catalog, self._log)
        try:
            self._load_totals()
        except sqlite3.Error as exc:
            self.close()
            self._catalog_failed(exc)
            return False
        self._needs_reconcile = False
        self._catalog_recovered()
        self._log.info("retention_configured", policy=self.policy.describe(), save_dir=str(self.save_dir))
        self._sweep_orphans()
        self._next_round = 0.0
        return True

    def written(self, metadata_path: Path) -> None:
        """A pair just became durable: add its row, and run retention now if the write crossed a limit."""
        if self._catalog is None:
            return
        try:
            record = record_from_metadata(metadata_path)
            self._catalog.add(record)
        except (sqlite3.Error, MetadataError, OSError) as exc:
            self._catalog_failed(exc)
            return
        self._catalog_recovered()
        self._used_bytes += record.size_bytes
        known = self._newest.get(record.sensor_name)
        if known is None or known < (record.first_capture_timestamp, record.stem):
            self._newest[record.sensor_name] = (record.first_capture_timestamp, record.stem)
        if self._over_a_limit():
            self._rounds()

    def tick(self, now: float | None = None) -> None:
        """Housekeeping: a retention round and fresh gauges every ``interval_s``."""
        now = time.monotonic() if now is None else now
        if now < self._next_round:
            return
        self._next_round = now + self._interval_s
        if self._catalog is None and not self.open():
            return
        if self._needs_reconcile:
            self._reconcile()
        self._rounds()
        self._sweep_orphans()

    def make_room(self, needed_bytes: int) -> bool:
        """A write failed for lack of space: with retention on, delete the oldest pairs until ``needed_bytes``
        plus some headroom are free (or until nothing deletable is left). Returns whether it freed any.

        Without a usable catalog (it could not even be opened on the full disk) the pairs are read from the
        JSON files into memory for this round: a full disk must never stop recording for want of an index."""
        if not self.policy.enabled:
            return False
        if self._catalog is None:
            return self._make_room_from_files(needed_bytes)
        floor = needed_bytes + EMERGENCY_HEADROOM_BYTES
        if self.policy.min_free_space is not None:
            floor = max(floor, self.policy.min_free_space.bytes_for(self._usage().total_bytes))
        if self._emergency_log.allow():
            self._log.warning(
                "storage_emergency",
                save_dir=str(self.save_dir),
                msg=f"disk full under {self.save_dir}: deleting the oldest segments to make room now "
                "(set min_free_space so that retention keeps room before the disk fills)",
            )
        return self._rounds(RetentionPolicy(min_free_space=SpaceFloor(size_bytes=floor)), emergency=True) > 0

    def _make_room_from_files(self, needed_bytes: int) -> bool:
        try:
            catalog, _problems = SegmentCatalog.scan(self.save_dir)
        except (OSError, sqlite3.Error) as exc:
            self._catalog_failed(exc)
            return False
        self._catalog, self._deleter = catalog, SegmentDeleter(self.save_dir, catalog, self._log)
        try:
            self._load_totals()
            return self.make_room(needed_bytes)
        finally:
            self.close()  # the real catalog is opened (and reconciled with what went) on the next tick

    def close(self) -> None:
        """Let go of the catalog (its directory went away, or the node stops); :meth:`open` again later."""
        if self._catalog is not None:
            with contextlib.suppress(sqlite3.Error):
                self._catalog.close()
            self._catalog = None
            self._next_round = 0.0

    # -- internals -------------------------------------------------------------------------------

    def _usage(self) -> DiskUsage:
        return DiskUsage.of(self.save_dir)

    def _over_a_limit(self) -> bool:
        policy = self.policy
        if policy.retain_max_size is not None and self._used_bytes > policy.retain_max_size:
            return True
        if policy.min_free_space is None:
            return False
        usage = self._usage()
        return usage.free_bytes < policy.min_free_space.bytes_for(usage.total_bytes)

    def _load_totals(self) -> None:
        assert self._catalog is not None
        self._used_bytes = self._catalog.totals()[1]
        self._newest = {
            sensor: (record.first_capture_timestamp, record.stem)
            for sensor, record in self._catalog.newest_per_sensor().items()
        }

    def _rounds(self, policy: RetentionPolicy | None = None, emergency: bool = False) -> int:
        """Rounds until one deletes nothing (each looks at the oldest :data:`ROUND_BATCH` pairs); returns
        how many pairs went. Failures are logged, never raised."""
        deleted = 0
        for _ in range(MAX_ROUNDS):
            try:
                count = self._round(policy or self.policy, emergency)
            except (OSError, sqlite3.Error) as exc:
                self._catalog_failed(exc)
                break
            deleted += count
            if not count:
                break
        self._metrics.storage_used_bytes.labels(self._metrics.node).set(self._used_bytes)
        with contextlib.suppress(OSError):  # an unusable directory is the writer's to report
            self._metrics.storage_free_bytes.labels(self._metrics.node).set(self._usage().free_bytes)
        return deleted

    def _round(self, policy: RetentionPolicy, emergency: bool) -> int:
        assert self._catalog is not None and self._deleter is not None
        if not policy.enabled:
            return 0
        uploads_required = self._catalog.uploads_required()
        if uploads_required:
            records = self._catalog.oldest(ROUND_BATCH, uploaded=True)
            records += self._catalog.oldest(ROUND_BATCH, uploaded=False)
        else:
            records = self._catalog.oldest(ROUND_BATCH)
        plan = plan_deletions(
            records,
            policy,
            self._usage(),
            time.time(),
            uploads_required,
            newest_stems={stem for _, stem in self._newest.values()},
            total_bytes=self._used_bytes,
        )
        result = self._deleter.delete(plan.deletions, emergency=emergency)
        self._used_bytes -= result.total_bytes
        for reason, count in result.segments.items():
            self._metrics.segments_deleted.labels(self._metrics.node, reason).inc(count)
        if len(records) < ROUND_BATCH or not plan.deletions:
            self._report_shortfall(plan.free_space_shortfall_bytes)
        return result.total_segments

    def _report_shortfall(self, shortfall_bytes: int) -> None:
        if shortfall_bytes and not self._shortfall_said:
            self._log.error(
                "retention_floor_unreachable",
                shortfall_bytes=shortfall_bytes,
                msg=f"free space stays {format_size(shortfall_bytes)} below min_free_space with only each sensor's "
                "newest segment left (and segments not yet uploaded, if an uploader is behind): something else "
                "fills this filesystem",
            )
        self._shortfall_said = bool(shortfall_bytes)

    def _reconcile(self) -> None:
        assert self._catalog is not None
        try:
            added, removed, _problems = self._catalog.reconcile()
        except (OSError, sqlite3.Error) as exc:
            self._catalog_failed(exc)
            return
        self._needs_reconcile = False
        self._catalog_recovered()
        self._load_totals()
        if added or removed:
            self._log.info("catalog_reconciled", added=added, removed=removed, save_dir=str(self.save_dir))

    def _sweep_orphans(self) -> None:
        try:
            removed = remove_orphan_videos(self.save_dir)
        except OSError:
            return  # the writer reports an unusable directory
        if removed:
            self._log.info("orphan_videos_removed", files=len(removed), first=removed[0])

    def _catalog_failed(self, exc: BaseException) -> None:
        self._needs_reconcile = True
        if not self._catalog_failing:
            self._catalog_failing = True
            self._log.error(
                "catalog_update_failed",
                error=str(exc),
                msg=f"cannot use the segment catalog ({exc}): segments are still written, but retention waits; "
                "the catalog is reconciled with the files once it works again",
            )

    def _catalog_recovered(self) -> None:
        if self._catalog_failing:
            self._catalog_failing = False
            self._log.info("catalog_update_recovered")
