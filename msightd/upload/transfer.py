"""Upload one segment pair: its MP4, then its JSON, each verified; the pair counts once both are.

Called from upload threads; holds no state between segments, touches neither the catalog nor the files
beyond reading them (the node marks and deletes, from one thread).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from msightd.storage.catalog import MetadataError, SegmentRecord, read_metadata
from msightd.upload.keys import SegmentKeys, metadata_object, segment_keys
from msightd.upload.s3 import ObjectStore


class LocalSegmentError(Exception):
    """The pair cannot be read from disk (gone, unreadable, not a segment's JSON). ``missing`` is true when
    its files are gone (deleted by retention or by hand), so there is nothing left to upload."""

    def __init__(self, message: str, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class UploadOutcome:
    stem: str
    keys: SegmentKeys
    bytes_sent: int
    #: Both objects were already in the store, verified identical (a crash after the upload, before the mark).
    already_present: bool
    duration_s: float
    #: The layout's key was taken by a different segment: the pair went under ``keys`` (tagged) instead.
    conflict_with: str | None = None


class SegmentUploader:
    """Uploads the pairs of one directory with one key layout."""

    def __init__(self, store: ObjectStore, directory: Path, layout: str, prefix: str, device: str) -> None:
        self._store = store
        self._directory = directory
        self._layout = layout
        self._prefix = prefix
        self._device = device

    def key_group(self, record: SegmentRecord) -> Hashable:
        """Pairs of one group may map to the same key, so they must not be uploaded at the same time (two
        uploads racing for a key could each find it free). MSight's keys have one-second resolution, so
        one sensor's pairs with the same whole first and last seconds form a group; other keys are unique."""
        if self._layout == "msight":
            return (record.sensor_name, int(record.first_capture_timestamp), int(record.last_capture_timestamp))
        return record.stem

    def upload(self, record: SegmentRecord) -> UploadOutcome:
        """Upload (or find already uploaded) both objects of ``record``. Raises :class:`LocalSegmentError`,
        :class:`~msightd.upload.s3.StoreError` or :class:`~msightd.upload.throttle.UploadCancelled`."""
        started = time.monotonic()
        metadata = self._metadata(record)
        keys = segment_keys(self._layout, self._prefix, self._device, metadata, record.metadata_file)
        video_path = self._directory / record.video_file
        try:
            json_body = metadata_object(self._layout, metadata, (self._directory / record.metadata_file).read_bytes())
            video_digest = self._store.digest(video_path)
        except OSError as exc:
            raise LocalSegmentError(f"cannot read {record.stem}: {exc.strerror or exc}", _gone(exc)) from exc
        json_digest = self._store.digest(json_body)
        conflict_with = None
        present = self._store.head(keys.video)
        if present is not None and present.sha256_hex != video_digest.sha256_hex:
            conflict_with = keys.video
            keys = keys.disambiguated(video_digest.sha256_hex[:8])
            present = self._store.head(keys.video)
        sent = 0
        video_there = present is not None and present.matches(video_digest)
        if not video_there:
            try:
                sent += self._store.put(keys.video, video_path, "video/mp4", video_digest)
            except OSError as exc:
                raise LocalSegmentError(f"cannot read {video_path.name}: {exc.strerror or exc}", _gone(exc)) from exc
        stored_json = self._store.head(keys.metadata)
        json_there = stored_json is not None and stored_json.matches(json_digest)
        if not json_there:
            sent += self._store.put(keys.metadata, json_body, "application/json", json_digest)
        return UploadOutcome(
            stem=record.stem,
            keys=keys,
            bytes_sent=sent,
            already_present=video_there and json_there,
            duration_s=time.monotonic() - started,
            conflict_with=conflict_with,
        )

    def _metadata(self, record: SegmentRecord) -> dict[str, object]:
        path = self._directory / record.metadata_file
        try:
            return read_metadata(path)
        except OSError as exc:
            raise LocalSegmentError(f"cannot read {path.name}: {exc.strerror or exc}", _gone(exc)) from exc
        except MetadataError as exc:
            raise LocalSegmentError(str(exc), missing=False) from exc


def _gone(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError)
