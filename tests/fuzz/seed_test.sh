#!/bin/sh
# seed_test.sh: the broker fuzz harness, built with the ordinary compiler,
# runs every generated seed input (a valid frame of each request kind) to
# the end: no crash, no leak, the healthy client served, nothing stuck.
set -eu
: "${TOP_BUILDDIR:?run through make check}"
dir=$(mktemp -d "${TMPDIR:-/tmp}/chand-seed.XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$TOP_BUILDDIR/tests/fuzz/mkcorpus" "$dir"
timeout 120 "$TOP_BUILDDIR/tests/fuzz/replay" "$dir"
