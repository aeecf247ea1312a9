"""Video S3 uploader node (``video_s3_uploader``; ``msight_launch_aws_video_pusher``): segments off the box,
into any S3-compatible store, durable through outages.

Two ways to get segments, both backed by a segment catalog on disk (:mod:`msightd.storage.catalog`):

* ``save_dir`` (the daemon's usual way): upload what a dumper writes into its save directory. The node
  declares itself in that catalog (``require_uploads``) so retention never removes a pair not yet uploaded
  for age or size; ``delete_after_upload`` removes each pair once it is verified in the store.
* ``subscribe_topic`` (MSight's pusher): a dumper runs inside this node and writes each segment durably into
  the spool directory (fsynced, catalogued, then acknowledged on the topic), and the spooled pair is deleted
  once uploaded. A broker restart, a kill or a reboot loses nothing that was acknowledged.

Uploads themselves: :mod:`msightd.upload` (keys, store, verification, bandwidth) and
:class:`~msightd.upload.loop.UploadLoop` (scheduling, retries, reporting).
"""

from __future__ import annotations

import threading
from pathlib import Path

from msightd.backoff import Backoff
from msightd.nodes.dumper import VideoLocalDumperNode
from msightd.nodes.options import ConfigError, DumperOptions, UploaderOptions
from msightd.nodes.runtime import TICK_INTERVAL_S, LogThrottle, NodeRuntime
from msightd.protocol import EXIT_OK
from msightd.storage.catalog import SegmentCatalog
from msightd.storage.save_dir import save_dir_problem
from msightd.upload.keys import normalize_prefix
from msightd.upload.loop import REMINDER_INTERVAL_S, UploadLoop
from msightd.upload.s3 import ObjectStore, StoreSettings
from msightd.upload.transfer import SegmentUploader


def store_settings(options: UploaderOptions) -> StoreSettings:
    return StoreSettings(
        bucket=options.bucket_name,
        endpoint_url=options.endpoint_url,
        region=options.aws_region,
        use_dualstack_endpoint=options.use_dualstack_endpoint,
        access_key_id=options.aws_access_key_id,
        secret_access_key=options.aws_secret_access_key,
        multipart_threshold=options.multipart_threshold,
        part_size=options.multipart_part_size,
        max_bandwidth=options.max_bandwidth,
        concurrency=options.concurrency,
    )


class VideoS3UploaderNode:
    def __init__(self, options: UploaderOptions, runtime: NodeRuntime) -> None:
        options.validate()
        self._options = options
        self._runtime = runtime

    def run(self) -> int:
        options, runtime = self._options, self._runtime
        if options.wait_s > 0 and runtime.stop.wait(options.wait_s):  # MSight's -w
            return EXIT_OK
        directory = options.directory()
        if not self._wait_until_usable(directory):
            return EXIT_OK
        catalog = SegmentCatalog.open_or_rebuild(directory, runtime.log)
        try:
            catalog.require_uploads(options.name)
            return self._run_with(catalog, directory)
        finally:
            catalog.close()

    def _wait_until_usable(self, directory: Path) -> bool:
        """A missing, unwritable or read-only directory (a disk that mounts late) is waited out, said once;
        False if the node was stopped meanwhile."""
        runtime, backoff, reported = self._runtime, Backoff(1.0, 30.0), False
        while (problem := save_dir_problem(directory, require_mount=False)) is not None:
            if not reported:
                runtime.log.error("upload_dir_unusable", directory=str(directory), msg=f"{problem}; waiting for it")
                reported = True
            deadline = backoff.next_delay()
            while deadline > 0 and not runtime.stop.is_set():
                runtime.heartbeat()
                runtime.stop.wait(min(deadline, 1.0))
                deadline -= 1.0
            if runtime.stop.is_set():
                return False
        return True

    def _run_with(self, catalog: SegmentCatalog, directory: Path) -> int:
        options, runtime = self._options, self._runtime
        settings = store_settings(options)
        store = ObjectStore(settings, cancel=runtime.stop)
        prefix = normalize_prefix(options.prefix)
        uploader = SegmentUploader(store, directory, options.key_layout, prefix, runtime.device_name)
        delete = options.spooling if options.delete_after_upload is None else options.delete_after_upload
        reminder = LogThrottle(REMINDER_INTERVAL_S).allow
        loop = UploadLoop(catalog, uploader, runtime.log, runtime.metrics, options.concurrency, delete, reminder)
        backlog, size, _oldest = catalog.upload_backlog()
        runtime.log.info(
            "uploader_started",
            mode="spool" if options.spooling else "save_dir",
            directory=str(directory),
            store=settings.describe(),
            bucket=options.bucket_name,
            key_layout=options.key_layout,
            prefix=prefix,
            concurrency=options.concurrency,
            max_bandwidth=options.max_bandwidth,
            delete_after_upload=delete,
            backlog_segments=backlog,
            backlog_bytes=size,
        )
        if options.spooling:
            return self._run_spooling(loop, directory)
        runtime.mark_ready()
        self._upload_until(loop, threading.Event(), beat=True)
        return EXIT_OK

    def _run_spooling(self, loop: UploadLoop, directory: Path) -> int:
        """The dumper receives, writes durably, catalogues and acknowledges on this thread (its loop is the
        node's heartbeat); the upload loop runs on another."""
        options = self._options
        try:
            dumper_options = DumperOptions(
                name=options.name,
                subscribe_topic=str(options.subscribe_topic),
                save_dir=str(directory),
                max_pending_segments=options.max_pending_segments,
                liveness_timeout_s=options.liveness_timeout_s,
            )
            dumper = VideoLocalDumperNode(dumper_options, self._runtime)
        except ConfigError:
            loop.close()
            raise
        dumper_done = threading.Event()
        uploading = threading.Thread(target=self._upload_until, args=(loop, dumper_done), name="upload-loop")
        uploading.start()
        try:
            return dumper.run()
        finally:
            dumper_done.set()
            uploading.join()

    def _upload_until(self, loop: UploadLoop, done: threading.Event, beat: bool = False) -> None:
        """Run ``loop`` until the node stops (or ``done``); ``beat``: this is the node's main loop."""
        try:
            while not self._runtime.stop.is_set() and not done.is_set():
                if beat:
                    self._runtime.heartbeat()
                if loop.tick():
                    self._runtime.progress()
                loop.wait(TICK_INTERVAL_S)
        finally:
            loop.close()
