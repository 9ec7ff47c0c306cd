"""A real Chromium, headless, driven through selenium: Debian's `chromium` and `chromium-driver` (hack/tools/chromium.sh
installs them). Nothing here downloads a browser or a driver, and the browser is kept off the network it would
otherwise reach for by itself (updates, sync, safe browsing), since the tests' machines have none."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser")
DRIVER_NAME = "chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    # Any host name fails at once instead of waiting on a resolver that cannot answer; the server is 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,1000",
)


def _browser() -> str | None:
    return next((found for name in BROWSER_NAMES if (found := shutil.which(name))), None)


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    missing = [
        what for what, found in (("chromium", _browser()), (DRIVER_NAME, shutil.which(DRIVER_NAME))) if not found
    ]
    if missing:
        return f"{' and '.join(missing)} not on PATH: run hack/tools/chromium.sh (make test does) to install them"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: make install puts the test extras in place"
    return None


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator:
    """A headless Chromium with a fresh profile in `profile`, as a selenium WebDriver; quits it afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _browser()
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver and browser: selenium's own manager would otherwise try to fetch them.
    driver = webdriver.Chrome(options=options, service=Service(shutil.which(DRIVER_NAME)))
    try:
        yield driver
    finally:
        driver.quit()
