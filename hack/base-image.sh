#!/usr/bin/env bash
# Makes `FROM python:3.11-slim` resolve for a podman build. In order: the image is already there (nothing to do); it
# can be pulled from Docker Hub (done); no registry is reachable, so a stand-in is built from Debian bookworm packages
# with mmdebstrap and tagged localhost/python:3.11-slim, which podman resolves the short name to.
# The stand-in has what the Dockerfile uses of the real image: python 3.11 with venv and its C headers (Inductor
# compiles kernels against Python.h at run time), `python` on PATH, CA certificates.
set -euo pipefail
base="python:3.11-slim"
# shellcheck source=hack/container-engine.sh
source "$(dirname "$0")/container-engine.sh"
if [ "$engine" != podman ]; then
  echo "base image: $engine pulls $base itself"
  exit 0
fi

headers='import pathlib, sys, sysconfig; sys.exit(not (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").exists())'
if podman image exists "$base"; then
  if podman run --rm "$base" python -c "$headers"; then
    echo "base image: $base present"
    exit 0
  fi
  echo "base image: $base has no Python.h; building it again"
  podman rmi --force "$base" >/dev/null
fi
if timeout 300 podman pull --quiet "docker.io/library/$base" >/dev/null 2>&1; then
  echo "base image: pulled docker.io/library/$base"
  exit 0
fi

echo "base image: no registry answered; building a stand-in for $base from Debian bookworm"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
mmdebstrap --quiet --variant=minbase \
  --include=python3.11,python3.11-venv,libpython3.11-dev,python-is-python3,ca-certificates \
  bookworm "$workdir/base.tar"
podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  "$workdir/base.tar" "localhost/$base" >/dev/null
echo "base image: localhost/$base ($(podman run --rm "localhost/$base" python --version))"
