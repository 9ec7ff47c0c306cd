# shellcheck shell=bash
# Sourced by the image scripts: picks the container engine and gives podman its settings.
# CONTAINER_ENGINE=docker|podman forces one; otherwise Docker when its daemon answers, else podman.
# Sets: engine (the command), engine_build_args (extra `build` arguments the engine needs).
_hack_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  else
    engine=podman
  fi
fi
engine_build_args=()
if [ "$engine" = podman ]; then
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$_hack_dir/podman/containers.conf}"
  # The build shares the host's network and resolver, as `docker build` does by default.
  engine_build_args+=(--network host)
fi

# The tag the chart runs by default: image-search:<appVersion of the chart>.
default_image() {
  local app_version
  app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$_hack_dir/../charts/image-search/Chart.yaml")"
  echo "image-search:${app_version:?appVersion missing from charts/image-search/Chart.yaml}"
}
