#!/usr/bin/env bash
# Runs a command with tcmalloc as its memory allocator, as the image runs the server (Dockerfile), so that the
# benchmarks measure the allocator pods get.
set -euo pipefail
"$(dirname "$0")/tools/tcmalloc.sh"
# tcmalloc reports every allocation over 1 GiB on stderr; a catalogue's vectors can be that big, and logs are JSON.
export TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776
export LD_PRELOAD="libtcmalloc_minimal.so.4${LD_PRELOAD:+:$LD_PRELOAD}"
exec "$@"
