# shellcheck shell=bash
# Sourced by the scripts that install Debian packages: `sudo` is the prefix for root commands (empty as root), and
# `apt_install PKG...` installs packages quietly without their recommends.
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

apt_install() {
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
