#!/usr/bin/env bash
# Puts the tools `make image` needs in place: nothing when a Docker engine answers; otherwise podman and runc to build
# and run, and mmdebstrap for hack/base-image.sh's stand-in base image (Debian packages). A second run does nothing.
# `make image` runs it; .ci/run builds the image before `make test`, so CI installs these.
set -euo pipefail

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "image tools: Docker engine present"
  exit 0
fi

missing=()
for tool in podman runc mmdebstrap; do
  if command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ]; then
    echo "image tools: $tool present"
  else
    missing+=("$tool")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/tools/apt.sh"
echo "image tools: installing ${missing[*]}"
apt_install "${missing[@]}"
