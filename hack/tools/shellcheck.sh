#!/usr/bin/env bash
# Puts shellcheck on PATH for the check of every hack/ script (Debian package); does nothing when it is there.
set -euo pipefail
if command -v shellcheck >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
shellcheck --version >/dev/null
