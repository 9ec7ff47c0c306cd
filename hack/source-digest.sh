#!/usr/bin/env bash
# Prints one digest of everything an image is built from: the Dockerfile and the files of its build context (those
# .dockerignore admits). `make image` stores it as a label, so a test can tell an image built from other sources.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  printf '%s\n' Dockerfile pyproject.toml README.md requirements/runtime.txt
  find predictor -type f ! -path '*/__pycache__/*' ! -name '*.pyc'
} | LC_ALL=C sort | while read -r path; do
  if [ -f "$path" ]; then sha256sum "$path"; fi
done | sha256sum | cut -d' ' -f1
