#!/usr/bin/env bash
# Puts a C++ compiler and Python's headers in place for Inductor, which compiles the network's CPU kernels at load
# (`--compile`; tests/unit/test_compilation.py and the search tests' servers); does nothing when both are there.
set -euo pipefail
python="$(dirname "$0")/../../.venv/bin/python"
[ -x "$python" ] || python=python3
headers="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if command -v "${CXX:-g++}" >/dev/null 2>&1 && [ -f "$headers/Python.h" ]; then
  exit 0
fi
# shellcheck source=hack/tools/apt.sh
source "$(dirname "$0")/apt.sh"
apt_install g++ "python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-dev"
