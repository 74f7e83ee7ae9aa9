#!/bin/sh
# demo.sh: the README's first command. Installs the packages, builds, starts
# chand on port 7070 and runs a multi-process job pipeline through it.
set -eu
cd "$(dirname "$0")/.."
sh deploy/install-deps.sh
sh deploy/build.sh
exec sh deploy/run-pipeline.sh "$(pwd)/build"
