#!/bin/sh
# run-pipeline.sh: runs the example job pipeline through a fresh chand, on a
# tree that is already built (deploy/build.sh). Starts chand on $PORT (7070),
# then 3 worker processes of 8 coroutines each, a producer of $N jobs and a
# collector, prints what the collector computed, stops chand, and exits 0
# only if every process succeeded and the collector's checks passed.
#
#   sh deploy/run-pipeline.sh [BUILD_DIR]       (default: ./build)
#
# Environment: PORT (7070; 0 picks a free one), N jobs (10000), WORKERS (3), COROUTINES (8),
# DELAY_MS per job (1), TIMEOUT seconds for the whole run (60).
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
PORT=${PORT:-7070}
N=${N:-10000}
WORKERS=${WORKERS:-3}
COROUTINES=${COROUTINES:-8}
DELAY_MS=${DELAY_MS:-1}
TIMEOUT=${TIMEOUT:-60}

chand=$build/chand
ex=$build/examples
for bin in "$chand" "$ex/producer" "$ex/worker" "$ex/collector"; do
    if [ ! -x "$bin" ]; then
        echo "run-pipeline: $bin not found: build first (sh deploy/build.sh)" >&2
        exit 1
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pipeline.XXXXXX") || exit 1
chand_pid=
pids=
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null
    done
    if [ -n "$chand_pid" ]; then
        # SIGTERM drains and exits; KILL only if it does not within 5 s.
        kill -TERM "$chand_pid" 2>/dev/null
        i=0
        while kill -0 "$chand_pid" 2>/dev/null && [ $i -lt 100 ]; do
            sleep 0.05
            i=$((i + 1))
        done
        kill -KILL "$chand_pid" 2>/dev/null
        wait "$chand_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# chand runs directly (not under timeout(1)) so that $chand_pid is the broker
# itself; the traps stop it however this script ends.
"$chand" --port "$PORT" --port-file "$tmp/port" >"$tmp/chand.log" 2>&1 </dev/null &
chand_pid=$!
i=0
while [ ! -s "$tmp/port" ]; do
    if ! kill -0 "$chand_pid" 2>/dev/null || [ $i -ge 200 ]; then
        echo "run-pipeline: chand did not start on port $PORT:" >&2
        cat "$tmp/chand.log" >&2
        exit 1
    fi
    sleep 0.05
    i=$((i + 1))
done
# With PORT=0 chand picks a free port; the port file says which.
addr=127.0.0.1:$(tr -dc 0-9 <"$tmp/port")
echo "chand listening on $addr"
echo "pipeline: 1 producer of $N jobs -> $WORKERS workers x $COROUTINES coroutines -> 1 collector"

run=run$$
start=$(date +%s.%N)
w=0
while [ $w -lt "$WORKERS" ]; do
    timeout "$TIMEOUT" "$ex/worker" -s "$addr" -p "$run" -c "$COROUTINES" -d "$DELAY_MS" &
    pids="$pids $!"
    w=$((w + 1))
done
timeout "$TIMEOUT" "$ex/producer" -s "$addr" -p "$run" -n "$N" &
pids="$pids $!"
timeout "$TIMEOUT" "$ex/collector" -s "$addr" -p "$run" -n "$N" -w "$WORKERS" \
    -t $((TIMEOUT * 1000)) >"$tmp/result"
status=$?

failed=0
for p in $pids; do
    wait "$p" || failed=$((failed + 1))
done
pids=
end=$(date +%s.%N)
cat "$tmp/result"
[ "$failed" -eq 0 ] || { echo "run-pipeline: $failed producer/worker process(es) failed" >&2; status=1; }
[ "$status" -eq 0 ] || { echo "run-pipeline: FAILED; chand log:" >&2; cat "$tmp/chand.log" >&2; }
awk -v s="$start" -v e="$end" 'BEGIN { printf "pipeline: %.2f s end to end\n", e - s }'
exit "$status"
