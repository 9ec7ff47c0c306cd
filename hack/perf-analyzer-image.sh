#!/usr/bin/env bash
# Builds localhost/perf-analyzer:2.60: Triton's perf_analyzer (PyPI `perf-analyzer`) on Debian 13. Its wheel needs
# glibc 2.38, newer than Debian 12's, so it runs in a container; podman and mmdebstrap come from hack/image-tools.sh.
# A second run does nothing.
set -euo pipefail
version="${PERF_ANALYZER_VERSION:-2.60}"
image="localhost/perf-analyzer:$version"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/podman/containers.conf}"
if podman image exists "$image"; then
  echo "perf_analyzer image: $image present"
  exit 0
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
echo "perf_analyzer image: building Debian trixie with mmdebstrap"
mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-pip,ca-certificates,libssl3t64,zlib1g,libstdc++6 \
  trixie "$workdir/base.tar" "$mirror"
podman import --quiet --change 'ENV LANG=C.UTF-8' "$workdir/base.tar" "$image-base" >/dev/null
# A TLS-inspecting network gives its CA bundle to pip through PIP_CERT; without one, Debian's bundle is used.
ca_args=()
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  ca_args=(--volume "$PIP_CERT:/etc/ssl/certs/host-ca.crt:ro" --env PIP_CERT=/etc/ssl/certs/host-ca.crt)
fi
podman run --name perf-analyzer-build --network host "${ca_args[@]}" "$image-base" \
  pip install --quiet --break-system-packages --no-cache-dir "perf-analyzer==$version"
podman commit --quiet perf-analyzer-build "$image" >/dev/null
podman rm perf-analyzer-build >/dev/null
podman rmi "$image-base" >/dev/null
echo "perf_analyzer image: $image ($(podman run --rm "$image" perf_analyzer --version 2>&1 | head -1))"
