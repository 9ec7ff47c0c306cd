#!/usr/bin/env bash
# Puts promtool and prometheus on PATH for the monitoring tests; does nothing when both are already there.
# The tests start their own Prometheus on a free port, so the Debian service must never be started here.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi

# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/apt.sh"

# invoke-rc.d and deb-systemd-invoke consult policy-rc.d; exit 101 means "do not start services".
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  added_policy=1
fi
cleanup() {
  if [ -n "$added_policy" ]; then
    $sudo rm -f "$policy"
  fi
}
trap cleanup EXIT

apt_install prometheus

# A systemd host may still have enabled the unit; keep port 9090 and the data directory free for the tests.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

promtool --version >/dev/null
prometheus --version >/dev/null
