#!/bin/sh
# semantic_local.sh: the semantic suite on local (in-process) channels.
CHAN_KIND=local exec "$TOP_BUILDDIR/tests/semantic_test"
