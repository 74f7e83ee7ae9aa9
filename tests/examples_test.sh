#!/bin/sh
# examples_test.sh: the first programs of examples/, each run alone with
# local channels, alone through a real chand, and split across two
# processes through it, checking what they print and their exit status.

[ -n "${CTL_TEST_BOUNDED:-}" ] || CTL_TEST_BOUNDED=1 exec timeout 120 sh "$0" "$@"
set -u
test_name=examples_test
. "${TOP_SRCDIR:-$(dirname "$0")/..}/tests/ctl_lib.sh"

ex=${TOP_BUILDDIR:?TOP_BUILDDIR must name the build tree}/examples

# same NAME WANT CMD...: CMD exits 0 and prints exactly WANT.
same() {
    what=$1
    want=$2
    shift 2
    out=$(timeout 30 "$@" 2>"$tmp/err")
    rc=$?
    [ "$rc" -eq 0 ] || fail "$what: exit $rc: $(cat "$tmp/err")"
    [ "$out" = "$want" ] || fail "$what: printed '$out', want '$want'"
}

# pair NAME WANT_FIRST FIRST... -- SECOND...: FIRST in the background
# (started first, so it is the one that waits), then SECOND; both exit 0
# and FIRST prints WANT_FIRST.
pair() {
    what=$1
    want=$2
    shift 2
    first=
    while [ "$1" != -- ]; do first="$first '$1'"; shift; done
    shift
    sh -c "timeout 30 $first >'$tmp/first.out' 2>&1; echo \$? >'$tmp/first.rc'" &
    bg_pids="$bg_pids $!"
    first_pid=$!
    timeout 30 "$@" >"$tmp/second.out" 2>&1 || fail "$what: second half: $(cat "$tmp/second.out")"
    wait "$first_pid"
    [ "$(cat "$tmp/first.rc")" = 0 ] || fail "$what: first half: $(cat "$tmp/first.out")"
    [ "$(cat "$tmp/first.out")" = "$want" ] ||
        fail "$what: first half printed '$(cat "$tmp/first.out")', want '$want'"
}

start_chand
pings=$(printf 'ping 1\npong 1\nping 2\npong 2\nping 3\npong 3')

# --- one process, local channels ----------------------------------------------
same "hello" "hello, world" "$ex/hello"
same "fortytwo" "main got 42" "$ex/fortytwo"
same "twoprint" "$pings" "$ex/twoprint"
same "broadcast" "broadcast: closed with 50 receivers waiting
broadcast: 50 of 50 waiting coroutines released by one close" "$ex/broadcast"
same "semaphore" "semaphore: limit 3, 8 coroutines x 10 rounds, at most 3 at once: OK" \
    "$ex/semaphore"

# --- one process, through the broker (run twice: a run leaves a clean slate) ---
for run in 1 2; do
    same "hello -s ($run)" "hello, world" "$ex/hello" -s "$addr"
    same "fortytwo -s ($run)" "main got 42" "$ex/fortytwo" -s "$addr"
    same "twoprint -s ($run)" "$pings" "$ex/twoprint" -s "$addr"
    same "broadcast -s ($run)" "broadcast: closed with 20 receivers waiting
broadcast: 20 of 20 waiting coroutines released by one close" "$ex/broadcast" -s "$addr" -c 20
done
same "semaphore -s" "semaphore: limit 2, 6 coroutines x 5 rounds, at most 2 at once: OK" \
    "$ex/semaphore" -s "$addr" -k 2 -c 6 -r 5

# --- two processes -----------------------------------------------------------
pair "hello across processes" "hi there" "$ex/hello" -s "$addr" -p x print -- \
    "$ex/hello" -s "$addr" -p x say "hi there"
pair "fortytwo across processes" "main got 42" "$ex/fortytwo" -s "$addr" -p x recv -- \
    "$ex/fortytwo" -s "$addr" -p x send
pair "twoprint across processes" "$(printf 'pong 1\npong 2\npong 3')" \
    "$ex/twoprint" -s "$addr" -p x pong -- "$ex/twoprint" -s "$addr" -p x ping
pair "broadcast across processes" "broadcast: 30 of 30 waiting coroutines released by one close" \
    "$ex/broadcast" -s "$addr" -p x -c 30 wait -- "$ex/broadcast" -s "$addr" -p x -w 30 close
# A waiter that comes after the close learns of it at once.
same "broadcast after the close" "broadcast: 5 of 5 waiting coroutines released by one close" \
    "$ex/broadcast" -s "$addr" -p x -c 5 wait

# The limit holds across two processes sharing one semaphore channel.
timeout 30 "$ex/semaphore" -s "$addr" -p y -k 3 -c 8 -r 8 >"$tmp/sem1" 2>&1 &
sem1=$!
timeout 30 "$ex/semaphore" -s "$addr" -p y -k 3 -c 8 -r 8 >"$tmp/sem2" 2>&1 ||
    fail "semaphore (second process): $(cat "$tmp/sem2")"
wait "$sem1" || fail "semaphore (first process): $(cat "$tmp/sem1")"
grep -q 'at most [123] at once: OK' "$tmp/sem1" || fail "semaphore 1: $(cat "$tmp/sem1")"
grep -q 'at most [123] at once: OK' "$tmp/sem2" || fail "semaphore 2: $(cat "$tmp/sem2")"
# With every slot taken from outside, the program must wait for one.
ctl send y.semaphore t1 t2 t3 >/dev/null 2>&1 || fail "could not take the slots"
timeout 30 "$ex/semaphore" -s "$addr" -p y -k 3 -r 1 -c 1 >"$tmp/sem3" 2>&1 &
sem3=$!
bg_pids="$bg_pids $sem3"
wait_stat y.semaphore senders 1  # all three slots taken: it must wait
ctl recv y.semaphore -n 1 >/dev/null || fail "could not free a slot"
wait "$sem3" || fail "semaphore after a slot was freed: $(cat "$tmp/sem3")"

finish
