#!/usr/bin/env bash
# Puts the command-line tools the tests drive in place; each script installs only what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for script in "$here"/tools/*.sh; do
  [ -e "$script" ] || continue
  bash "$script"
done
