#!/usr/bin/env bash
# Puts Debian's chromium and chromium-driver on PATH for the search page's browser tests (tests/e2e/test_search_page.py
# drives them through selenium); does nothing when a chromedriver and a Chromium or Chrome are there already, as on
# GitHub's runners (the tests pick the browser of the driver's version). Nothing downloads a browser build of its own.
set -euo pipefail
if command -v chromedriver >/dev/null 2>&1; then
  for browser in chromium chromium-browser google-chrome-stable google-chrome; do
    if command -v "$browser" >/dev/null 2>&1; then
      exit 0
    fi
  done
fi
# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install chromium chromium-driver
chromedriver --version >/dev/null
