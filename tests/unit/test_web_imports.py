"""The web runs in the daemon's process, which must never load the media stack."""

from __future__ import annotations

import subprocess
import sys


def test_the_web_package_imports_no_media_library() -> None:
    code = (
        "import sys; import msightd.daemon.web.server, msightd.daemon.web.catalogs; "
        "print(sorted({'cv2', 'av', 'numpy'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
