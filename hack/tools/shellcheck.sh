#!/usr/bin/env bash
# Puts shellcheck on PATH for the check of every hack/ script (Debian package); does nothing when it is there.
set -euo pipefail
if command -v shellcheck >/dev/null 2>&1; then
  exit 0
fi
# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install shellcheck
shellcheck --version >/dev/null
