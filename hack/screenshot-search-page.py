#!/usr/bin/env python3
"""Take a picture of the search page searching with one photo, in a headless Chromium, for the documentation.

The README's picture is made this way from `make run` (the sample catalogue on :8080):

    .venv/bin/python hack/screenshot-search-page.py --url http://localhost:8080 \
        --photo data/sample-catalogue/chelsea.jpg --out docs/images/search-page.png
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.browser import chromium, chromium_missing  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:8080", help="The server, started with --ui.")
    parser.add_argument("--photo", type=Path, required=True, help="The photo to search with.")
    parser.add_argument("--out", type=Path, required=True, help="Where the PNG goes.")
    parser.add_argument("--top-k", type=int, default=12, help="Results to show (two rows of six at this width).")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="Longest wait for the page and its results.")
    args = parser.parse_args()
    missing = chromium_missing()
    if missing:
        print(f"screenshot-search-page: {missing}", file=sys.stderr)
        return 1
    from selenium.common.exceptions import TimeoutException, WebDriverException

    try:
        return screenshot(args)
    except (TimeoutException, WebDriverException) as error:
        print(f"screenshot-search-page: {args.url}/ui/: {error.msg}", file=sys.stderr)
        return 1


def screenshot(args: argparse.Namespace) -> int:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as profile, chromium(Path(profile)) as driver:
        wait = WebDriverWait(driver, args.timeout_s, poll_frequency=0.1)
        driver.get(f"{args.url}/ui/")
        wait.until(lambda d: d.find_element(By.ID, "images").text not in ("", "…"))
        top_k = driver.find_element(By.ID, "top-k")
        top_k.clear()
        top_k.send_keys(str(args.top_k))
        driver.find_element(By.ID, "photo").send_keys(str(args.photo.resolve()))
        wait.until(lambda d: d.find_element(By.ID, "results").get_attribute("data-searches") == "1")
        wait.until(lambda d: all(i.get_property("complete") for i in d.find_elements(By.CSS_SELECTOR, ".thumbnail")))
        error = driver.find_element(By.ID, "error")
        if error.is_displayed():
            print(f"screenshot-search-page: the page shows an error: {error.text}", file=sys.stderr)
            return 1
        # The whole page, not only the first screenful: a window taller than the page, so that it lays out as it
        # is captured (without a scroll bar), cut at the page's footer.
        driver.set_window_size(1280, 2400)
        height = driver.execute_script(
            "document.activeElement.blur(); return document.querySelector('footer').getBoundingClientRect().bottom;"
        )
        picture = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        picture.crop((0, 0, picture.width, min(picture.height, round(height)))).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
