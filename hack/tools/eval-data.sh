#!/usr/bin/env bash
# Puts the evaluation pictures in place: GCompris's resource files (the development set and the test subset) and
# rsvg-convert to draw its SVG pictures. Does nothing when both are already there. `make eval` also asks
# hack/eval-packages.sh for Wesnoth's unit art, the cross-check set.
set -euo pipefail

if [ -f /usr/share/gcompris-qt/rcc/categorization.rcc ] && command -v rsvg-convert >/dev/null 2>&1; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends gcompris-qt-data librsvg2-bin >/dev/null
test -f /usr/share/gcompris-qt/rcc/categorization.rcc
rsvg-convert --version >/dev/null
