#!/bin/sh
# install-peers.sh: installs, from Debian packages, the brokers chand is
# measured against (Redis, NATS, beanstalkd), their C client libraries, Go
# (for the local-channel comparison) and gnuplot. Only what is missing is
# installed; nothing is started here (run.sh starts each peer on loopback).
set -eu

PKGS="redis-server libhiredis-dev nats-server libnats-dev beanstalkd golang-go gnuplot-nox pkg-config"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-peers.sh: need root or sudo to install:$missing" >&2
    exit 1
fi

echo "install-peers.sh: installing$missing" >&2
$SUDO apt-get update -qq
# The packaged services must not start system-wide instances: run.sh starts
# its own on free loopback ports. policy-rc.d 101 tells invoke-rc.d to skip.
prc=/usr/sbin/policy-rc.d
made_prc=0
if [ ! -e "$prc" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$prc" >/dev/null
    $SUDO chmod 755 "$prc"
    made_prc=1
fi
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
[ "$made_prc" -eq 1 ] && $SUDO rm -f "$prc"
exit 0
