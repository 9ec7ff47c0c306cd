#!/usr/bin/env bash
# Everything `make eval` reads: the test tools' GCompris pictures plus Wesnoth's unit art and the Open Clip Art
# Library's drawings (about 150 MB and 25 MB to download, so not part of `make test`). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/tools/eval-data.sh"

if [ -d /usr/share/games/wesnoth/1.16/data/core/images/units ] && [ -d /usr/share/openclipart/svg ]; then
  exit 0
fi
# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/tools/apt.sh"
apt_install wesnoth-1.16-data openclipart-svg
test -d /usr/share/games/wesnoth/1.16/data/core/images/units
test -d /usr/share/openclipart/svg
