"""A real headless Chromium driven by selenium, for tests and ``scripts/screenshot``.

Uses Debian's ``chromium`` and ``chromium-driver`` (``scripts/system-deps test`` installs them); selenium's
own driver download is switched off (it cannot work offline, and a silent download is not what we test).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_missing() -> str | None:
    """``None`` when a browser and its driver are installed, else what to install."""
    missing = [
        what for what, names in (("chromium", CHROMIUM_NAMES), ("chromedriver", DRIVER_NAMES)) if not _which(names)
    ]
    if missing:
        return (
            f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
            "(scripts/system-deps test)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A selenium ``WebDriver`` for a fresh headless Chromium profile; quit on exit.

    Videos may autoplay (muted or not) without a user gesture, as a person clicking "play" would allow.
    """
    reason = browser_missing()
    if reason is not None:
        raise RuntimeError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(_which(CHROMIUM_NAMES))
    for argument in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--mute-audio",
        "--autoplay-policy=no-user-gesture-required",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to start its sandbox as root
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(_which(DRIVER_NAMES))))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def screenshot(url: str, output: str, width: int = 1100, height: int = 800, settle_s: float = 4.0) -> None:
    """Save a PNG of ``url`` once its thumbnails have loaded (``scripts/screenshot`` uses it)."""
    import time

    with headless_chromium(width, height) as driver:
        driver.get(url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            loaded = driver.execute_script(
                "return [...document.images].every(img => img.complete && img.naturalWidth > 0)"
            )
            if loaded:
                break
            time.sleep(0.5)
        time.sleep(settle_s)  # let a refresh or two happen, as a person would see it
        page_height = driver.execute_script("return document.documentElement.scrollHeight")
        chrome = driver.execute_script("return window.outerHeight - window.innerHeight")  # bars around the page
        driver.set_window_size(width, min(max(height, page_height), 3000) + chrome)
        driver.save_screenshot(output)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.support.browser URL OUTPUT.png")
    screenshot(sys.argv[1], sys.argv[2])
