#!/usr/bin/env bash
# Makes `FROM python:3.11-slim` resolve for a podman build. In order: the image is already there (nothing to do); it
# can be pulled from Docker Hub (done); no registry is reachable, so a stand-in is built from Debian bookworm packages
# with mmdebstrap and tagged localhost/python:3.11-slim, which podman resolves the short name to.
# The stand-in has what the Dockerfile uses of the real image: python 3.11 with venv, `python` on PATH, CA certificates.
set -euo pipefail
base="python:3.11-slim"
# shellcheck source=hack/container-engine.sh
source "$(dirname "$0")/container-engine.sh"
if [ "$engine" != podman ]; then
  echo "base image: $engine pulls $base itself"
  exit 0
fi

if podman image exists "$base"; then
  echo "base image: $base present"
  exit 0
fi
if timeout 300 podman pull --quiet "docker.io/library/$base" >/dev/null 2>&1; then
  echo "base image: pulled docker.io/library/$base"
  exit 0
fi

echo "base image: no registry answered; building a stand-in for $base from Debian bookworm"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
mmdebstrap --quiet --variant=minbase \
  --include=python3.11,python3.11-venv,python-is-python3,ca-certificates \
  bookworm "$workdir/base.tar"
podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  "$workdir/base.tar" "localhost/$base" >/dev/null
echo "base image: localhost/$base ($(podman run --rm "localhost/$base" python --version))"
