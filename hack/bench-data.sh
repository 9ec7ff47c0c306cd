#!/usr/bin/env bash
# Puts the real images the search-at-scale benchmark embeds in place (Debian's wesnoth-1.16-data artwork); does
# nothing when they are already there. Only `make bench` needs them, never the tests.
set -euo pipefail

if [ -d /usr/share/games/wesnoth/1.16 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wesnoth-1.16-data
