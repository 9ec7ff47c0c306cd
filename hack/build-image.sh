#!/usr/bin/env bash
# Builds the predictor image from the Dockerfile, with Docker when its daemon answers and with podman otherwise
# (`make image`). Prints the build time and the image size.
# Usage: hack/build-image.sh [IMAGE]        (default: image-search:<chart appVersion>, what the chart runs)
# Environment:
#   PIP_CA_BUNDLE     CA bundle pip trusts inside the build, for a TLS-intercepting proxy (default: the system bundle,
#                     /etc/ssl/certs/ca-certificates.crt, when it exists). It replaces pip's own trust store for the
#                     build, so pass a full bundle: the system one with the proxy's CA added.
#   PIP_BUILD_CONFIG  a pip config file for the build (a private index or mirror, for example).
#   TORCH_INDEX_URL   an extra index for torch, e.g. https://download.pytorch.org/whl/cpu for a CPU-only image.
#   CONTAINER_ENGINE  docker or podman, to choose.
# Both files go in as build secrets: mounted for the pip step only, never stored in a layer or the image history.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=hack/container-engine.sh
source "$repo/hack/container-engine.sh"
image="${1:-$(default_image)}"

# The label lets a test refuse an image built from other sources (hack/source-digest.sh).
args=(build --tag "$image" --file "$repo/Dockerfile" --label "image-search.source-digest=$("$repo/hack/source-digest.sh")"
  "${engine_build_args[@]}")
ca_bundle="${PIP_CA_BUNDLE:-}"
if [ -z "$ca_bundle" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  ca_bundle=/etc/ssl/certs/ca-certificates.crt
fi
if [ -n "$ca_bundle" ]; then
  args+=(--secret "id=pip-ca,src=$ca_bundle")
fi
if [ -n "${PIP_BUILD_CONFIG:-}" ]; then
  args+=(--secret "id=pip-conf,src=$PIP_BUILD_CONFIG")
fi
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
fi

if [ "$engine" = podman ]; then
  "$repo/hack/base-image.sh"
fi
started="$(date +%s)"
"$engine" "${args[@]}" "$repo"
elapsed="$(($(date +%s) - started))"
size="$("$engine" image inspect --format '{{.Size}}' "$image")"
echo "built $image with $engine in ${elapsed} s; $((size / 1000000)) MB"
