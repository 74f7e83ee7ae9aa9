#!/bin/sh
# build.sh: builds the tree from nothing into ./build (out of tree).
# Extra arguments go to configure, e.g. --enable-sanitizers.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
builddir=${BUILDDIR:-$top/build}
autoreconf -fi
mkdir -p "$builddir"
cd "$builddir"
"$top/configure" --enable-werror "$@"
make -j"$(nproc)"
