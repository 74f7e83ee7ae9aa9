#!/bin/sh
# fault_valgrind.sh: chand under valgrind's memcheck serves a short but
# varied workload (chanctl send, recv, a receive that times out, leased
# work with an ack and a nack, a blocked receiver and a lease holder killed
# with SIGKILL, the example pipeline), then gets SIGTERM: it must exit 0
# with no memory error and no definite leak. The clients (chanctl, the
# pipeline's coroutine programs) run under memcheck too.
#
# Coroutine stacks are registered with memcheck (VALGRIND_STACK_REGISTER in
# client/coro.c), so a switch between two of them is a change of stacks,
# not one stack jumping by a few hundred KiB.

[ -n "${FAULT_BOUNDED:-}" ] || FAULT_BOUNDED=1 exec timeout 300 sh "$0" "$@"
set -u
test_name=fault_valgrind
. "${TOP_SRCDIR:-$(dirname "$0")/..}/tests/ctl_lib.sh"

if grep -q '^#define CHAN_SANITIZERS 1' "${TOP_BUILDDIR:?}/config.h" 2>/dev/null; then
    echo "SKIP: valgrind cannot run programs built with ASan; this test runs in a plain build"
    exit 77
fi
if ! command -v valgrind >/dev/null 2>&1; then
    echo "FAIL: valgrind is not installed (Debian: apt-get install valgrind)"
    exit 1
fi

VG="valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite"
ex=$TOP_BUILDDIR/examples

# vg NAME CMD...: run a client under memcheck; its findings go to vg-NAME.log.
vg() {
    vg_name=$1
    shift
    # shellcheck disable=SC2086
    timeout 120 $VG --log-file="$tmp/vg-$vg_name.log" "$@"
}

# Every client report must be empty: -q leaves only errors and definite leaks.
check_client_logs() {
    for f in "$tmp"/vg-*.log; do
        [ -s "$f" ] || continue
        fail "memcheck on $(basename "$f" .log | sed 's/^vg-//'):"
        sed 's/^/    /' "$f"
    done
}

# shellcheck disable=SC2086
$VG --log-file="$tmp/memcheck-chand.log" "$CHAND" --port 0 --port-file "$tmp/port" \
    --log-level warn >"$tmp/chand.log" 2>&1 </dev/null &
chand_pid=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 600 ]; do
    kill -0 "$chand_pid" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
done
port=$(tr -dc 0-9 <"$tmp/port" 2>/dev/null)
if [ -z "$port" ]; then
    echo "FAIL: chand under valgrind did not start:"
    cat "$tmp/chand.log" "$tmp/memcheck-chand.log"
    exit 1
fi
addr=127.0.0.1:$port

# Plain sends and receives, one message and two hundred.
vg send1 "$CHANCTL" -s "$addr" send -c 10 q a b c d e || fail "send q"
[ "$(vg recv1 "$CHANCTL" -s "$addr" recv q -n 3 | tr '\n' ' ')" = "a b c " ] || fail "recv q"
seq 1 200 | vg send2 "$CHANCTL" -s "$addr" send -c 500 lines || fail "send lines"
[ "$(vg recv2 "$CHANCTL" -s "$addr" recv lines -n 200 | wc -l)" -eq 200 ] || fail "recv lines"

# A receive that times out (the broker's deadline timer), exit status 3.
vg recv3 "$CHANCTL" -s "$addr" recv empty -c 1 -t 200 >/dev/null 2>&1
[ $? -eq 3 ] || fail "recv with -t 200 on an empty channel did not time out"

# Leased work: the first job fails and is handed out again, then both succeed.
vg send3 "$CHANCTL" -s "$addr" send -c 10 jobs ok1 ok2 || fail "send jobs"
vg work1 "$CHANCTL" -s "$addr" work jobs -n 1 -- false >/dev/null 2>&1
vg work2 "$CHANCTL" -s "$addr" work jobs -n 2 -- cat >"$tmp/work.out" 2>&1 || fail "work jobs"
[ "$(cat "$tmp/work.out")" = "ok1ok2" ] || fail "work ran '$(cat "$tmp/work.out")', want ok1ok2"
wait_stat jobs len 0
wait_stat jobs unacked 0

# A blocked receiver killed: the broker withdraws it.
bg "$CHANCTL" -s "$addr" recv hold -c 0 >/dev/null 2>&1
holder=$!
wait_stat hold receivers 1
kill -KILL "$holder"
wait_stat hold receivers 0

# A lease holder killed mid-job: its message goes back to the channel.
vg send4 "$CHANCTL" -s "$addr" send -c 4 held job || fail "send held"
bg "$CHANCTL" -s "$addr" work held -l 60000 -- sleep 5 >/dev/null 2>&1
worker=$!
wait_stat held unacked 1
kill -KILL "$worker"
wait_stat held unacked 0
wait_stat held len 1

# The example pipeline: a producer, two workers of four coroutines, a collector.
bg vg producer "$ex/producer" -s "$addr" -p vg -n 100
for w in 1 2; do
    bg vg "worker$w" "$ex/worker" -s "$addr" -p vg -c 4
done
vg collector "$ex/collector" -s "$addr" -p vg -n 100 -w 2 -t 60000 >"$tmp/pipeline.out" 2>&1 ||
    fail "pipeline: $(cat "$tmp/pipeline.out")"
grep -q ': OK$' "$tmp/pipeline.out" || fail "pipeline: collector said $(cat "$tmp/pipeline.out")"
for p in $bg_pids; do
    [ "$p" = "$holder" ] || [ "$p" = "$worker" ] || wait "$p" || fail "a pipeline process failed"
done
bg_pids=

vg close "$CHANCTL" -s "$addr" close q || fail "close q"
vg rm "$CHANCTL" -s "$addr" rm lines || fail "rm lines"

# SIGTERM: memcheck's verdict is chand's exit status (1 on any error or definite leak).
kill -TERM "$chand_pid"
i=0
while kill -0 "$chand_pid" 2>/dev/null && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 "$chand_pid" 2>/dev/null; then
    fail "chand under valgrind still running 60 s after SIGTERM"
else
    wait "$chand_pid"
    rc=$?
    chand_pid=
    [ $rc -eq 0 ] || fail "chand under valgrind exited $rc"
fi
if [ -s "$tmp/memcheck-chand.log" ]; then
    fail "memcheck on chand:"
    sed 's/^/    /' "$tmp/memcheck-chand.log"
fi
check_client_logs
[ $fails -eq 0 ] && echo "fault_valgrind: chand and $(ls "$tmp"/vg-*.log | wc -l) client runs clean under memcheck"
finish
