"""A real Chromium, headless, driven through selenium: Debian's `chromium` and `chromium-driver` (hack/tools/chromium.sh
installs them), or a Chrome the machine already has whose version matches its chromedriver (CI runners ship one).
Nothing here downloads a browser or a driver, and the browser is kept off the network it would otherwise reach for by
itself (updates, sync, safe browsing), since the tests' machines have none."""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
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
    # Any other host name fails at once instead of waiting on a resolver that cannot answer.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--window-size=1280,1000",
)
_VERSION = re.compile(r"\b(\d+)\.\d+\.\d+")


def _major_version(program: str) -> str | None:
    try:
        answer = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _VERSION.search(answer.stdout)
    return found.group(1) if found else None


@functools.cache
def _browser_and_driver() -> tuple[str, str] | str:
    """The first browser on PATH of the driver's major version, and the driver; or why there is none."""
    driver = shutil.which(DRIVER_NAME)
    browsers = [found for name in BROWSER_NAMES if (found := shutil.which(name))]
    if not driver or not browsers:
        missing = [what for what, found in (("chromium", browsers), (DRIVER_NAME, driver)) if not found]
        return f"{' and '.join(missing)} not on PATH: run hack/tools/chromium.sh (make test does) to install them"
    wanted = _major_version(driver)
    for browser in browsers:
        if _major_version(browser) == wanted:
            return browser, driver
    return f"{driver} (version {wanted}) matches none of {browsers}: install chromium-driver for the browser"


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    found = _browser_and_driver()
    if isinstance(found, str):
        return found
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

    found = _browser_and_driver()
    if isinstance(found, str):
        raise RuntimeError(found)
    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver and browser: selenium's own manager would otherwise try to fetch them.
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
