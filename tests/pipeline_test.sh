#!/bin/sh
# pipeline_test.sh: the example job pipeline across real processes: one
# producer, three workers of four coroutines, one collector, through a real
# chand. The collector checks every job came back once with the right value;
# the test also checks that the collector does notice a wrong count, that
# two runs with different prefixes share one broker, and that a finished run
# leaves no channels behind.

[ -n "${CTL_TEST_BOUNDED:-}" ] || CTL_TEST_BOUNDED=1 exec timeout 120 sh "$0" "$@"
set -u
test_name=pipeline_test
. "${TOP_SRCDIR:-$(dirname "$0")/..}/tests/ctl_lib.sh"

ex=${TOP_BUILDDIR:?TOP_BUILDDIR must name the build tree}/examples

# run_pipeline PREFIX N COLLECTOR_N: the whole pipeline; collector's output
# in $tmp/PREFIX.out, its status in $tmp/PREFIX.rc, the others' in .log.
run_pipeline() {
    p=$1 n=$2 cn=$3
    pids=
    for w in 1 2 3; do
        timeout 60 "$ex/worker" -s "$addr" -p "$p" -c 4 -d 1 2>>"$tmp/$p.log" &
        pids="$pids $!"
    done
    timeout 60 "$ex/producer" -s "$addr" -p "$p" -n "$n" 2>>"$tmp/$p.log" &
    pids="$pids $!"
    timeout 60 "$ex/collector" -s "$addr" -p "$p" -n "$cn" -w 3 -t 30000 \
        >"$tmp/$p.out" 2>>"$tmp/$p.log"
    echo $? >"$tmp/$p.rc"
    others=0
    for pid in $pids; do
        wait "$pid" || others=$((others + 1))
    done
    echo "$others" >"$tmp/$p.others"
}

start_chand

# Two runs at once on one broker, kept apart by their prefixes.
run_pipeline a 500 500 &
run_a=$!
run_pipeline b 300 300 &
run_b=$!
wait "$run_a"
wait "$run_b"
for p in a b; do
    cat "$tmp/$p.out"
    [ "$(cat "$tmp/$p.rc")" = 0 ] ||
        fail "run $p: collector exit $(cat "$tmp/$p.rc"): $(cat "$tmp/$p.out" "$tmp/$p.log")"
    grep -q ': OK$' "$tmp/$p.out" || fail "run $p: collector said: $(cat "$tmp/$p.out")"
    [ "$(cat "$tmp/$p.others")" = 0 ] ||
        fail "run $p: $(cat "$tmp/$p.others") producer/worker processes failed: $(cat "$tmp/$p.log")"
done
grep -q '^pipeline: 500 results of 500 jobs from 3 workers: sum 41791750 ' "$tmp/a.out" ||
    fail "run a: unexpected summary $(cat "$tmp/a.out")"
[ "$(grep -c '^worker .*: [0-9]* jobs' "$tmp/a.log")" = 3 ] ||
    fail "run a: not three worker reports: $(cat "$tmp/a.log")"

# A finished run removes its channels.
ctl ls >"$tmp/ls" 2>&1 || fail "ls: $(cat "$tmp/ls")"
[ "$(wc -l <"$tmp/ls")" -eq 1 ] || fail "channels left after the runs: $(cat "$tmp/ls")"

# The collector's check can fail: expecting 501 jobs where 500 come.
run_pipeline c 500 501
[ "$(cat "$tmp/c.rc")" = 1 ] || fail "collector accepted 500 results for 501 jobs: $(cat "$tmp/c.out")"
grep -q ': FAILED$' "$tmp/c.out" || fail "mismatch not reported: $(cat "$tmp/c.out")"

finish
