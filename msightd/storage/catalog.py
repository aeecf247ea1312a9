"""The segment catalog: an SQLite index of the segment pairs in one save directory.

``<save_dir>/.msightd/catalog.sqlite3`` in WAL mode, so several processes can use it at once: the dumper
adds rows (right after a segment's JSON is durable, the same order as the files) and deletes them (after
the files), an uploader marks uploads, the daemon and ``msightd segments`` read. Each
:class:`SegmentCatalog` holds one connection guarded by a lock, so threads of one process may share it.

The files stay the truth. A JSON exists only once its MP4 is complete, so the catalog can always be
rebuilt from the ``*.json`` files (:meth:`SegmentCatalog.rebuild`, ``msightd segments reindex``), and
:meth:`SegmentCatalog.open_or_rebuild` rebuilds a missing or corrupt catalog and reconciles a readable one
with the files (a crash between a JSON and its row, a pair deleted by hand). Two things are not in the
files: upload marks, and which uploaders declared themselves. Declarations are mirrored in
``.msightd/uploaders.json`` and survive a rebuild; upload marks survive a rebuild of a readable catalog,
and after a corrupt one every segment counts as not uploaded (the safe side: protected from age and size
retention, offered to the uploader again).

Only the standard library is imported, so the daemon can read catalogs without the media stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any, Protocol

from msightd.storage.pairs import (
    FrameRecord,
    MetadataError,
    SegmentRecord,
    is_segment_video,
    metadata_files,
    read_frames,
    read_metadata,
    record_from_metadata,
    scan_metadata,
)

__all__ = [
    "CatalogCorrupt",
    "FrameRecord",
    "MetadataError",
    "SegmentCatalog",
    "SegmentRecord",
    "catalog_path",
    "is_segment_video",
    "read_frames",
    "read_metadata",
    "record_from_metadata",
    "scan_metadata",
]

CATALOG_DIR = ".msightd"
CATALOG_FILE = "catalog.sqlite3"
UPLOADERS_FILE = "uploaders.json"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0
#: WAL pages after which a commit checkpoints (SQLite's default, 1000, lets the WAL reach ~4 MB).
WAL_CHECKPOINT_PAGES = 100
#: Size a WAL is truncated back to after a checkpoint.
WAL_SIZE_LIMIT_BYTES = 1 << 20


class CatalogCorrupt(Exception):
    """The catalog file exists but is not a usable catalog (the message says why)."""


class EventLog(Protocol):
    """The part of a structlog logger the catalog uses."""

    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...


_COLUMNS = tuple(field.name for field in fields(SegmentRecord))
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS segments (
    stem TEXT PRIMARY KEY,
    sensor_name TEXT NOT NULL,
    video_file TEXT NOT NULL,
    metadata_file TEXT NOT NULL,
    first_capture_timestamp REAL NOT NULL,
    last_capture_timestamp REAL NOT NULL,
    frame_count INTEGER NOT NULL,
    video_size_bytes INTEGER NOT NULL,
    metadata_size_bytes INTEGER NOT NULL,
    video_sha256 TEXT NOT NULL,
    codec TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    fps REAL NOT NULL,
    written_at REAL NOT NULL,
    uploaded_at REAL,
    upload_key TEXT
);
CREATE INDEX IF NOT EXISTS segments_by_time ON segments (first_capture_timestamp);
CREATE INDEX IF NOT EXISTS segments_by_sensor ON segments (sensor_name, first_capture_timestamp);
CREATE INDEX IF NOT EXISTS segments_not_uploaded ON segments (first_capture_timestamp) WHERE uploaded_at IS NULL;
CREATE TABLE IF NOT EXISTS uploaders (name TEXT PRIMARY KEY, declared_at REAL NOT NULL);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_INSERT = (
    f"INSERT INTO segments ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    "ON CONFLICT (stem) DO UPDATE SET video_size_bytes = excluded.video_size_bytes, "
    "metadata_size_bytes = excluded.metadata_size_bytes"
)


def catalog_path(save_dir: Path) -> Path:
    return save_dir / CATALOG_DIR / CATALOG_FILE


class SegmentCatalog:
    """The catalog of ``save_dir``; opening creates it (and ``.msightd/``) when missing.

    Raises :class:`CatalogCorrupt` when the file is not a catalog this version can use, and ``OSError``
    when the directory cannot hold one. ``database`` overrides the file (``":memory:"`` for
    :meth:`scan`).
    """

    def __init__(self, save_dir: Path, database: str | None = None) -> None:
        self.save_dir = save_dir
        self._lock = threading.Lock()
        if database is None:
            (save_dir / CATALOG_DIR).mkdir(parents=True, exist_ok=True)
            database = str(catalog_path(save_dir))
        self._connection = _connect(database)

    @classmethod
    def scan(cls, save_dir: Path) -> tuple[SegmentCatalog, list[str]]:
        """A catalog in memory built from the JSON files, for readers that cannot or should not write
        ``save_dir`` (returned with the problems found, one line per unusable JSON)."""
        catalog = cls(save_dir, database=":memory:")
        records, problems = scan_metadata(save_dir)
        catalog._replace_all(records, {})
        catalog._restore_uploaders()
        return catalog, problems

    @classmethod
    def open_or_rebuild(cls, save_dir: Path, log: EventLog, full_rebuild: bool = False) -> SegmentCatalog:
        """Open the catalog of ``save_dir``, rebuilding it from the files when it is missing or corrupt (a
        corrupt file is kept beside it as ``catalog.sqlite3.corrupt-<time>`` for inspection) or when
        ``full_rebuild``, and reconciling it with the files otherwise. Logs what it did; ``OSError`` if
        the directory cannot hold a catalog."""
        path = catalog_path(save_dir)
        existed = path.exists()
        try:
            catalog = cls(save_dir)
        except CatalogCorrupt as exc:
            kept = _set_aside(path)
            log.error(
                "catalog_corrupt",
                catalog=str(path),
                error=str(exc),
                kept_as=kept.name,
                msg=f"segment catalog {path} is unusable ({exc}); rebuilding it from the JSON files",
            )
            catalog = cls(save_dir)
            existed = False
        if existed and not full_rebuild:
            added, removed, problems = catalog.reconcile()
            if added or removed:
                log.info("catalog_reconciled", added=added, removed=removed, save_dir=str(save_dir))
        else:
            count, problems = catalog.rebuild()
            log.info("catalog_rebuilt", segments=count, save_dir=str(save_dir))
        if problems:
            log.warning(
                "catalog_skipped_files",
                files=len(problems),
                first=problems[0],
                msg=f"{len(problems)} JSON files in {save_dir} are not complete segments and are not catalogued "
                f"(first: {problems[0]})",
            )
        return catalog

    # -- rows ------------------------------------------------------------------------------------

    def add(self, record: SegmentRecord) -> None:
        """Add a pair; adding a stem again only refreshes its sizes (keeps its upload mark)."""
        with self._write() as connection:
            connection.execute(_INSERT, astuple(record))

    def remove(self, stem: str) -> None:
        self.remove_many([stem])

    def remove_many(self, stems: list[str]) -> None:
        with self._write() as connection:
            connection.executemany("DELETE FROM segments WHERE stem = ?", [(stem,) for stem in stems])

    def get(self, stem: str) -> SegmentRecord | None:
        rows = self._select("WHERE stem = ?", (stem,))
        return rows[0] if rows else None

    def segments(
        self, sensor: str | None = None, start: float | None = None, end: float | None = None
    ) -> list[SegmentRecord]:
        """Pairs ordered by first capture time, optionally one sensor's and only those with capture times
        overlapping ``[start, end)`` (last capture >= start and first capture < end)."""
        clauses: list[str] = []
        params: list[object] = []
        if sensor is not None:
            clauses.append("sensor_name = ?")
            params.append(sensor)
        if start is not None:
            clauses.append("last_capture_timestamp >= ?")
            params.append(start)
        if end is not None:
            clauses.append("first_capture_timestamp < ?")
            params.append(end)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select(where, tuple(params))

    def oldest(self, limit: int, uploaded: bool | None = None) -> list[SegmentRecord]:
        """The ``limit`` pairs with the oldest first capture (only uploaded ones, or only pairs not yet
        uploaded, if ``uploaded`` says so): what retention looks at, without reading millions of rows."""
        where = {None: "", True: "WHERE uploaded_at IS NOT NULL", False: "WHERE uploaded_at IS NULL"}[uploaded]
        return self._select(where, (), limit=limit)

    def newest_per_sensor(self) -> dict[str, SegmentRecord]:
        """Each sensor's pair with the latest first capture."""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {', '.join(_COLUMNS)}, MAX(first_capture_timestamp) FROM segments GROUP BY sensor_name"
            ).fetchall()
        return {row[1]: SegmentRecord(*row[:-1]) for row in rows}

    def sensors(self) -> list[str]:
        with self._lock:
            rows = self._connection.execute("SELECT DISTINCT sensor_name FROM segments ORDER BY sensor_name")
            return [row[0] for row in rows]

    def totals(self) -> tuple[int, int]:
        """(pairs, bytes of MP4s and JSONs) in the catalog."""
        with self._lock:
            count, size = self._connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(video_size_bytes + metadata_size_bytes), 0) FROM segments"
            ).fetchone()
        return int(count), int(size)

    def frames(self, stem: str) -> list[FrameRecord]:
        """Per-frame ids and capture times, read from the pair's JSON (not kept in the database)."""
        record = self.get(stem)
        if record is None:
            raise KeyError(stem)
        return read_frames(self.save_dir / record.metadata_file)

    # -- uploads ---------------------------------------------------------------------------------

    def require_uploads(self, uploader: str) -> None:
        """An uploader declares itself (call it at every start): from now on segments not yet uploaded are
        protected from age and size retention. Only :meth:`release_uploads` ends it."""
        with self._write() as connection:
            connection.execute(
                "INSERT INTO uploaders (name, declared_at) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET declared_at = excluded.declared_at",
                (uploader, time.time()),
            )
        self._mirror_uploaders()

    def release_uploads(self, uploader: str) -> None:
        """The uploader is gone for good (removed from the configuration): its protection ends."""
        with self._write() as connection:
            connection.execute("DELETE FROM uploaders WHERE name = ?", (uploader,))
        self._mirror_uploaders()

    def uploaders(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._connection.execute("SELECT name FROM uploaders ORDER BY name")]

    def uploads_required(self) -> bool:
        with self._lock:
            return self._connection.execute("SELECT EXISTS (SELECT 1 FROM uploaders)").fetchone()[0] == 1

    def pending_uploads(self, limit: int = 100) -> list[SegmentRecord]:
        """Pairs not yet uploaded, oldest first capture first."""
        return self._select("WHERE uploaded_at IS NULL", (), limit=limit)

    def mark_uploaded(self, stem: str, key: str, at: float) -> None:
        with self._write() as connection:
            connection.execute("UPDATE segments SET uploaded_at = ?, upload_key = ? WHERE stem = ?", (at, key, stem))

    def upload_backlog(self) -> tuple[int, int, float | None]:
        """(pairs, bytes of MP4s and JSONs, oldest first capture time) not yet uploaded."""
        with self._lock:
            count, size, oldest = self._connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(video_size_bytes + metadata_size_bytes), 0), "
                "MIN(first_capture_timestamp) FROM segments WHERE uploaded_at IS NULL"
            ).fetchone()
        return int(count), int(size), oldest

    # -- rebuilding ------------------------------------------------------------------------------

    def rebuild(self) -> tuple[int, list[str]]:
        """Replace every row with what the JSON files say, keeping upload marks of pairs still there and
        restoring uploader declarations from their mirror file. Returns (pairs, problems)."""
        records, problems = scan_metadata(self.save_dir)
        with self._lock:
            marks = {
                row[0]: (row[1], row[2])
                for row in self._connection.execute(
                    "SELECT stem, uploaded_at, upload_key FROM segments WHERE uploaded_at IS NOT NULL"
                )
            }
        self._replace_all(records, marks)
        self._restore_uploaders()
        return len(records), problems

    def reconcile(self) -> tuple[int, int, list[str]]:
        """Add pairs whose row is missing and drop rows whose JSON is gone (cheap: only new JSON files are
        read). Returns (added, removed, problems)."""
        on_disk = {path.stem: path for path in metadata_files(self.save_dir)}
        with self._lock:
            known = {row[0] for row in self._connection.execute("SELECT stem FROM segments")}
        gone = sorted(known - on_disk.keys())
        added, problems = [], []
        for stem in sorted(on_disk.keys() - known):
            try:
                added.append(record_from_metadata(on_disk[stem]))
            except (MetadataError, OSError) as exc:
                problems.append(str(exc))
        with self._write() as connection:
            connection.executemany(_INSERT, [astuple(record) for record in added])
            connection.executemany("DELETE FROM segments WHERE stem = ?", [(stem,) for stem in gone])
        self._restore_uploaders()
        return len(added), len(gone), problems

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> SegmentCatalog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _select(self, where: str, params: tuple[Any, ...], limit: int | None = None) -> list[SegmentRecord]:
        query = f"SELECT {', '.join(_COLUMNS)} FROM segments {where} ORDER BY first_capture_timestamp, stem"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._lock:
            return [SegmentRecord(*row) for row in self._connection.execute(query, params)]

    def _replace_all(self, records: list[SegmentRecord], marks: dict[str, tuple[float, str]]) -> None:
        rows = []
        for record in records:
            uploaded_at, key = marks.get(record.stem, (record.uploaded_at, record.upload_key))
            rows.append((*astuple(record)[:-2], uploaded_at, key))
        with self._write() as connection:
            connection.execute("DELETE FROM segments")
            connection.executemany(_INSERT, rows)

    def _mirror_uploaders(self) -> None:
        if self._in_memory():
            return
        path = self.save_dir / CATALOG_DIR / UPLOADERS_FILE
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"uploaders": self.uploaders()}) + "\n")
        os.replace(temp, path)

    def _restore_uploaders(self) -> None:
        path = self.save_dir / CATALOG_DIR / UPLOADERS_FILE
        try:
            names = json.loads(path.read_text())["uploaders"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        with self._write() as connection:
            connection.executemany(
                "INSERT OR IGNORE INTO uploaders (name, declared_at) VALUES (?, ?)",
                [(str(name), time.time()) for name in names],
            )

    def _in_memory(self) -> bool:
        with self._lock:
            rows = self._connection.execute("PRAGMA database_list").fetchall()
        return not rows[0][2]


#: SQLite's verdicts that the file itself is damaged (others, e.g. read-only or locked, are not corruption).
_CORRUPTION = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def _connect(database: str) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.OperationalError as exc:
        raise OSError(f"cannot open {database}: {exc}") from exc
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        # a small, bounded WAL: the catalog shares its disk with segments, and that disk may be nearly full
        connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise CatalogCorrupt(f"schema version {version}, this msightd knows {SCHEMA_VERSION}")
        check = connection.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise CatalogCorrupt(f"integrity check failed: {check}")
        connection.executescript(_SCHEMA)
        columns = [row[1] for row in connection.execute("PRAGMA table_info(segments)")]
        if tuple(columns) != _COLUMNS:
            raise CatalogCorrupt(f"unexpected columns {columns}")
    except sqlite3.DatabaseError as exc:
        connection.close()
        if getattr(exc, "sqlite_errorname", None) in _CORRUPTION:
            raise CatalogCorrupt(str(exc)) from exc
        # locked, read-only (owned by another user), I/O error, disk full: the file may be fine
        raise OSError(f"cannot use {database}: {exc}") from exc
    except CatalogCorrupt:
        connection.close()
        raise
    return connection


def _set_aside(path: Path) -> Path:
    kept = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{kept}{suffix}")
    return kept
