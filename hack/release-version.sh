#!/usr/bin/env bash
# Prints the version a release tag stands for, and fails unless it is the chart's version and appVersion, so a tag
# cannot publish an image and a chart that disagree.
# Usage: hack/release-version.sh v1.2.3
set -euo pipefail
tag="${1:?usage: hack/release-version.sh vX.Y.Z}"
chart="$(cd "$(dirname "$0")/.." && pwd)/charts/image-search/Chart.yaml"
version="${tag#v}"
field() { sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$chart"; }
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "release tag $tag is not vMAJOR.MINOR.PATCH" >&2
  exit 1
fi
for name in version appVersion; do
  if [ "$(field "$name")" != "$version" ]; then
    echo "tag $tag does not match $name $(field "$name") in charts/image-search/Chart.yaml" >&2
    exit 1
  fi
done
echo "$version"
