#!/usr/bin/env bash
# Copies the canonical dashboards and rules from monitoring/ into the chart, which Helm cannot read outside of.
# Run it after changing anything in monitoring/; a unit test fails while the copies differ.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
chart_files="$root/charts/image-search/files"

sync() {
  local from="$1" to="$2" pattern="$3"
  mkdir -p "$to"
  # Copies whose canonical file is gone would keep shipping a deleted dashboard or rule.
  find "$to" -maxdepth 1 -type f -name "$pattern" -delete
  find "$from" -maxdepth 1 -type f -name "$pattern" -exec cp {} "$to/" \;
}

sync "$root/monitoring/dashboards" "$chart_files/dashboards" '*.json'
sync "$root/monitoring/rules" "$chart_files/rules" '*.yaml'
