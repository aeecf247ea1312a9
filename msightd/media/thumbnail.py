"""A camera's latest picture as a small JPEG for the web page: ``<thumbnail dir>/<safe sensor>.jpg``.

Written every ``interval_s`` at most (the page refreshes every few seconds; 320 px wide ≈ 10-20 kB), and
only while someone looks: the web page touches a demand file (:func:`msightd.protocol.thumbnail_demand_path`)
whenever it serves a thumbnail, and a camera node that sees no demand for ``THUMBNAIL_DEMAND_S`` stops making
them and removes its last one, so a stale picture never looks live. That matters for a box that runs for
months with the page closed: a camera recorded without decoding has to decode a whole keyframe for each
thumbnail, which costs it more than recording. Written atomically (a temp file in the same directory, then
``rename``), so the web never serves half a picture. The directory is the daemon's runtime dir, which is
RAM on most systems: nothing here is fsynced and nothing is kept. A write that fails (the directory
gone, the disk full) is logged once per outage and never stops the camera.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msightd.protocol import THUMBNAIL_DEMAND_S, THUMBNAIL_INTERVAL_S

if TYPE_CHECKING:
    import numpy as np

THUMBNAIL_WIDTH = 320
THUMBNAIL_QUALITY = 70


class ThumbnailWriter:
    """Owned by one camera node's main loop (not thread-safe). ``demand``: the web page's demand file (None:
    thumbnails are always made)."""

    def __init__(
        self,
        path: Path,
        log: Any,
        demand: Path | None = None,
        width: int = THUMBNAIL_WIDTH,
        interval_s: float = THUMBNAIL_INTERVAL_S,
        quality: int = THUMBNAIL_QUALITY,
    ) -> None:
        self.path = path
        self.width = width
        self._log = log
        self._interval_s = interval_s
        self._demand = demand
        self._quality = quality
        self._next_at = 0.0
        self._failing = False
        self._temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def due(self, now: float) -> bool:
        """Whether the next picture should be made into a thumbnail (``now``: monotonic seconds). Checks the
        demand file at most once per interval; without demand the last thumbnail is removed."""
        if now < self._next_at:
            return False
        if self._demand is None or self._wanted():
            return True
        self._next_at = now + self._interval_s
        self.remove()
        return False

    def _wanted(self) -> bool:
        assert self._demand is not None
        try:
            asked_at = os.stat(self._demand).st_mtime
        except OSError:
            return False
        return time.time() - asked_at <= THUMBNAIL_DEMAND_S

    def write(self, bgr: np.ndarray, now: float) -> None:
        """Scale ``bgr`` to ``width`` (keeping its aspect) and replace the thumbnail with it."""
        import cv2  # here: a camera node recording without decoding may never need OpenCV

        self._next_at = now + self._interval_s
        height, width = bgr.shape[:2]
        if width != self.width:
            size = (self.width, max(2, round(height * self.width / width)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        try:
            if not ok:
                raise OSError("the JPEG encoder refused the picture")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._temp.write_bytes(jpeg.tobytes())
            os.replace(self._temp, self.path)
        except OSError as exc:
            if not self._failing:
                self._log.warning("thumbnail_write_failed", path=str(self.path), error=str(exc))
            self._failing = True
            return
        if self._failing:
            self._log.info("thumbnail_write_recovered", path=str(self.path))
        self._failing = False

    def remove(self) -> None:
        """The camera stops: no stale picture stays behind to look live."""
        self.path.unlink(missing_ok=True)
        self._temp.unlink(missing_ok=True)
