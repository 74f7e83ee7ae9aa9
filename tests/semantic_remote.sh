#!/bin/sh
# semantic_remote.sh: the same semantic suite on remote channels, hosted by
# a chand the test binary starts on 127.0.0.1 from $CHAND.
CHAN_KIND=remote exec "$TOP_BUILDDIR/tests/semantic_test"
