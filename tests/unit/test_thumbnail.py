"""The camera node's thumbnail: small, atomic, rate-limited, made on demand, and never fatal."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import structlog
from structlog.testing import capture_logs

from msightd.media.thumbnail import ThumbnailWriter
from msightd.protocol import THUMBNAIL_DEMAND_S


def picture(width: int = 1280, height: int = 720) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (0, 0, 255)  # left half red
    return image


def test_a_thumbnail_is_a_small_jpeg_of_the_picture(tmp_path: Path) -> None:
    writer = ThumbnailWriter(tmp_path / "thumbs" / "cam.jpg", structlog.get_logger())
    assert writer.due(0.0)
    writer.write(picture(), 0.0)
    decoded = cv2.imread(str(writer.path))
    assert decoded.shape == (180, 320, 3)
    assert decoded[90, 40, 2] > 200 and decoded[90, 280, 2] < 50
    assert [p.name for p in writer.path.parent.iterdir()] == ["cam.jpg"]  # no temp file left
    assert not writer.due(1.0) and writer.due(2.0)
    writer.remove()
    assert not writer.path.exists()


def test_a_failing_write_is_logged_once_and_the_recovery_too(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    writer = ThumbnailWriter(blocker / "cam.jpg", structlog.get_logger())
    with capture_logs() as logs:
        for now in range(3):
            writer.write(picture(64, 48), float(now * 10))
        blocker.unlink()
        writer.write(picture(64, 48), 100.0)
    assert [entry["event"] for entry in logs] == ["thumbnail_write_failed", "thumbnail_write_recovered"]
    assert cv2.imread(str(writer.path)).shape == (240, 320, 3)


def test_thumbnails_are_made_only_while_the_page_wants_them(tmp_path: Path) -> None:
    demand = tmp_path / ".wanted"
    writer = ThumbnailWriter(tmp_path / "cam.jpg", structlog.get_logger(), demand=demand)
    assert not writer.due(0.0)  # nobody ever asked
    assert not writer.due(1.0)  # and the file is looked at once per interval, not per frame
    demand.touch()
    assert not writer.due(1.9) and writer.due(2.0)
    writer.write(picture(), 2.0)
    assert writer.path.exists() and not writer.due(3.0) and writer.due(4.0)
    stale = time.time() - THUMBNAIL_DEMAND_S - 1
    os.utime(demand, (stale, stale))
    assert not writer.due(4.0)
    assert not writer.path.exists()  # the last picture goes: it would look live on the page
