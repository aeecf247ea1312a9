"""The web's doors to the storage package: read the save dirs' catalogs, export in a child process.

Both are injected into :class:`~msightd.daemon.web.site.WebSources` by the composition root. Export runs
``msightd segments export`` as a child process because it needs PyAV, which the daemon never imports.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from msightd.daemon.web.site import ExportFailed
from msightd.storage.catalog import CatalogCorrupt, SegmentCatalog, catalog_path

#: A clip takes a few seconds per hour of video (packets are copied, not re-encoded); this is the bound.
EXPORT_TIMEOUT_S = 600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class CatalogReaders:
    """One open catalog per save dir, shared by the request threads (a catalog is thread-safe), opened on
    first use once the dumper has created it, and reopened when its file was replaced (rebuilt after
    corruption). ``get`` returns ``None`` while a save dir has no usable catalog."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, tuple[int, SegmentCatalog]] = {}

    def get(self, save_dir: Path) -> SegmentCatalog | None:
        try:
            inode = os.stat(catalog_path(save_dir)).st_ino
        except OSError:
            return None
        with self._lock:
            known = self._open.get(save_dir)
            if known is not None and known[0] == inode:
                return known[1]
            if known is not None:
                known[1].close()
                del self._open[save_dir]
            try:
                catalog = SegmentCatalog(save_dir)
            except (CatalogCorrupt, OSError):
                return None
            self._open[save_dir] = (inode, catalog)
            return catalog

    def close(self) -> None:
        with self._lock:
            for _inode, catalog in self._open.values():
                catalog.close()
            self._open.clear()


class SubprocessExporter:
    """Makes a clip with ``msightd segments export`` in a child process (same interpreter and path)."""

    def __init__(self, timeout_s: float = EXPORT_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s

    def __call__(self, save_dir: Path, sensor: str, start: float, end: float, out_dir: Path) -> Path:
        output = out_dir / f"{_UNSAFE.sub('_', sensor).strip('._-')[:60] or 'clip'}_{int(start)}-{int(end)}.mp4"
        command = [
            sys.executable,
            "-m",
            "msightd.cli.daemon",
            "segments",
            "export",
            f"--save-dir={save_dir}",
            f"--sensor={sensor}",  # one argument: a sensor name starting with '-' is not taken for a flag
            f"--from={start!r}",
            f"--to={end!r}",
            f"--output={output}",
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=self._timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ExportFailed(f"the export took longer than {self._timeout_s:g} s; ask for a shorter range") from None
        if result.returncode != 0 or not output.is_file():
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            raise ExportFailed(lines[-1] if lines else f"the export failed (exit status {result.returncode})")
        return output
