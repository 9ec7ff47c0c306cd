# shellcheck shell=bash
# Sourced by the scripts that install Debian packages: `sudo` is the prefix for root commands (empty as root), and
# `apt_install PKG...` installs packages quietly without their recommends.
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

# Two installs may run at once (`make test BUILD_IMAGE=yes --jobs=2`): apt's own lock fails the second at once, so
# they take turns on a lock of their own.
apt_install() {
  (
    flock 9
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  ) 9>"${TMPDIR:-/tmp}/image-search-apt.lock"
}
