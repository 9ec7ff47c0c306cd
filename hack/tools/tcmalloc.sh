#!/usr/bin/env bash
# Puts tcmalloc in place, the allocator the image serves with (hack/with-tcmalloc.sh runs the benchmarks with it);
# does nothing when it is there.
set -euo pipefail
if /sbin/ldconfig -p | grep -q libtcmalloc_minimal.so.4; then
  exit 0
fi
# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install libtcmalloc-minimal4
