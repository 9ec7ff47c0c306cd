#!/usr/bin/env bash
# Puts the evaluation pictures in place: GCompris's resource files (the development set and the test subset) and
# rsvg-convert to draw its SVG pictures. Does nothing when both are already there. `make eval` also asks
# hack/eval-packages.sh for Wesnoth's unit art, the cross-check set.
set -euo pipefail

if [ -f /usr/share/gcompris-qt/rcc/categorization.rcc ] && command -v rsvg-convert >/dev/null 2>&1; then
  exit 0
fi

# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install gcompris-qt-data librsvg2-bin
test -f /usr/share/gcompris-qt/rcc/categorization.rcc
rsvg-convert --version >/dev/null
