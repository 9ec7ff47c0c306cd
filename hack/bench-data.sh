#!/usr/bin/env bash
# Puts the real images the search-at-scale benchmark embeds in place (Debian's wesnoth-1.16-data artwork); does
# nothing when they are already there. Only `make bench` needs them, never the tests.
set -euo pipefail

if [ -d /usr/share/games/wesnoth/1.16 ]; then
  exit 0
fi
# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/tools/apt.sh"
apt_install wesnoth-1.16-data
