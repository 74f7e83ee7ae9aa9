#!/bin/sh
# install-deps.sh: installs the Debian packages that building chand and
# libchanclient and running their tests need. Safe to run again.
set -eu

PKGS="build-essential autoconf automake libtool pkg-config
      libevent-dev libprotobuf-c-dev protobuf-c-compiler uuid-dev check
      procps psmisc valgrind"

if [ "$(id -u)" -eq 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
else
    echo "install-deps.sh: run as root or install sudo" >&2
    exit 1
fi

# Skip apt entirely when everything is already there (repeat runs, CI reruns).
missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
fi
