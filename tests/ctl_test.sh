#!/bin/sh
# ctl_test.sh: chanctl against a real chand. Every subcommand, the
# send/recv round trip of `seq 1000`, close and drain as a shell sees them,
# unbuffered rendezvous, deadlines, -z, and the exit status of each kind of
# error (1 failed operation, 2 usage, 3 deadline).

# Bound the whole test; the EXIT trap still cleans up on a timeout.
[ -n "${CTL_TEST_BOUNDED:-}" ] || CTL_TEST_BOUNDED=1 exec timeout 120 sh "$0" "$@"
set -u
test_name=ctl_test
. "${TOP_SRCDIR:-$(dirname "$0")/..}/tests/ctl_lib.sh"

# expect STATUS DESCRIPTION CMD...: run CMD, check its exit status; its
# stdout and stderr stay in $tmp/out and $tmp/err.
expect() {
    want=$1
    what=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    [ "$got" -eq "$want" ] || fail "$what: exit $got, want $want (stderr: $(cat "$tmp/err"))"
}

# err_says TEXT DESCRIPTION: the last command's stderr is one chanctl line with TEXT.
err_says() {
    grep -q "^chanctl: .*$1" "$tmp/err" || fail "$2: stderr '$(cat "$tmp/err")' lacks '$1'"
}

start_chand

# --- usage errors: exit 2, before any connection --------------------------
expect 0 "--help" "$CHANCTL" --help
grep -q 'recv NAME' "$tmp/out" || fail "--help does not describe recv"
expect 2 "no command" "$CHANCTL" -s "$addr"
expect 2 "unknown command" "$CHANCTL" -s "$addr" frobnicate
expect 2 "recv without a name" "$CHANCTL" -s "$addr" recv
expect 2 "stat with two names" "$CHANCTL" -s "$addr" stat a b
expect 2 "-n on send" "$CHANCTL" -s "$addr" send x -n 3 hi
expect 2 "bad -n" "$CHANCTL" -s "$addr" recv x -n many
expect 2 "unknown option" "$CHANCTL" -s "$addr" --bogus ls

# --- an empty broker -----------------------------------------------------
expect 0 "ls on an empty broker" ctl ls
[ "$(wc -l <"$tmp/out")" -eq 1 ] || fail "ls on an empty broker printed: $(cat "$tmp/out")"
head -n 1 "$tmp/out" | grep -q 'NAME.*CAP.*LEN.*UNACKED.*SENDERS.*RECEIVERS.*CLOSED' ||
    fail "ls header: $(head -n 1 "$tmp/out")"
expect 0 "CHAND_ADDR picks the broker" env CHAND_ADDR="$addr" timeout 20 "$CHANCTL" ls

# --- missing channels: exit 1 with the reason ------------------------------
expect 1 "recv on a missing channel" ctl recv nosuch
err_says "recv nosuch: no such channel" "recv on a missing channel"
expect 1 "stat of a missing channel" ctl stat nosuch
err_says "no such channel" "stat of a missing channel"
expect 1 "close of a missing channel" ctl close nosuch
expect 1 "rm of a missing channel" ctl rm nosuch
expect 1 "bad channel name" ctl send "two words" x
expect 0 "ls after the failures" ctl ls
[ "$(wc -l <"$tmp/out")" -eq 1 ] || fail "failed commands created channels: $(cat "$tmp/out")"

# --- seq 1000 through a channel -------------------------------------------
seq 1000 >"$tmp/seq"
expect 0 "seq 1000 | send jobs" ctl send jobs <"$tmp/seq"
[ "$(stat_field jobs len)" = 1000 ] || fail "after send: len $(stat_field jobs len), want 1000"
[ "$(stat_field jobs cap)" = 1024 ] || fail "send made cap $(stat_field jobs cap), want 1024"
expect 0 "ls with jobs" ctl ls
awk '$1 == "jobs" && $2 == 1024 && $3 == 1000 && $4 == 0 && $7 == "no" { ok = 1 }
     END { exit !ok }' "$tmp/out" || fail "ls row for jobs: $(cat "$tmp/out")"
expect 0 "recv jobs -n 1000" ctl recv jobs -n 1000
cmp -s "$tmp/out" "$tmp/seq" || fail "recv -n 1000 did not print 1..1000 in order"
[ "$(stat_field jobs len)" = 0 ] || fail "after recv: len $(stat_field jobs len), want 0"
[ "$(stat_field jobs unacked)" = 0 ] || fail "after recv: unacked $(stat_field jobs unacked)"

# --- each message once, even across separate chanctl runs -------------------
expect 0 "send three args" ctl send jobs one "two words" ""
expect 0 "recv -n 1 (first)" ctl recv jobs -n 1
[ "$(cat "$tmp/out")" = one ] || fail "first recv -n 1 got '$(cat "$tmp/out")'"
expect 0 "recv -n 1 (second)" ctl recv jobs -n 1
[ "$(cat "$tmp/out")" = "two words" ] || fail "second recv -n 1 got '$(cat "$tmp/out")'"
[ "$(stat_field jobs len)" = 1 ] || fail "one message should remain: len $(stat_field jobs len)"

# --- close and drain ---------------------------------------------------------
expect 0 "close jobs" ctl close jobs
[ "$(stat_field jobs closed)" = yes ] || fail "stat after close: closed $(stat_field jobs closed)"
expect 1 "send on a closed channel" ctl send jobs late
err_says "send jobs: channel is closed" "send on a closed channel"
expect 1 "close twice" ctl close jobs
err_says "channel is closed" "close twice"
expect 0 "recv drains a closed channel" ctl recv jobs
[ "$(wc -l <"$tmp/out")" -eq 1 ] && [ -z "$(cat "$tmp/out")" ] ||
    fail "drain printed '$(cat "$tmp/out")', want one empty line (the empty message)"
expect 0 "recv on a closed drained channel" ctl recv jobs
[ -s "$tmp/out" ] && fail "closed drained channel printed '$(cat "$tmp/out")'"
expect 0 "recv -n 5 on a closed drained channel" ctl recv jobs -n 5

# --- a blocked recv is released by close from another chanctl ---------------
# (a send that times out still leaves the channel it created)
expect 3 "send -t 0 on a new unbuffered channel" ctl send -c 0 -t 0 gate x
[ "$(stat_field gate cap)" = 0 ] || fail "send -c 0 made cap $(stat_field gate cap)"
[ "$(stat_field gate senders)" = 0 ] || fail "a timed-out sender still waits"
bg sh -c "timeout 20 '$CHANCTL' -s '$addr' recv gate >'$tmp/gate.out' 2>&1; echo \$? >'$tmp/gate.rc'"
wait_stat gate receivers 1
expect 0 "close gate" ctl close gate
i=0
while [ ! -s "$tmp/gate.rc" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ "$(cat "$tmp/gate.rc" 2>/dev/null)" = 0 ] ||
    fail "recv released by close: exit '$(cat "$tmp/gate.rc" 2>/dev/null)', want 0"
[ -s "$tmp/gate.out" ] && fail "recv released by close printed '$(cat "$tmp/gate.out")'"

# --- unbuffered rendezvous: send returns only once someone takes it ---------
bg sh -c "timeout 20 '$CHANCTL' -s '$addr' send -c 0 meet hello >'$tmp/meet.out' 2>&1; echo \$? >'$tmp/meet.rc'"
wait_stat meet senders 1
[ -s "$tmp/meet.rc" ] && fail "unbuffered send returned before any recv"
expect 0 "recv meets the sender" ctl recv meet -n 1
[ "$(cat "$tmp/out")" = hello ] || fail "rendezvous got '$(cat "$tmp/out")'"
i=0
while [ ! -s "$tmp/meet.rc" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ "$(cat "$tmp/meet.rc" 2>/dev/null)" = 0 ] ||
    fail "unbuffered send: exit '$(cat "$tmp/meet.rc" 2>/dev/null)' ($(cat "$tmp/meet.out"))"

# --- deadlines: exit 3 ---------------------------------------------------
expect 3 "recv -t on an empty channel" ctl recv -c 4 -t 100 idle
err_says "recv idle: timed out" "recv -t"
expect 0 "fill idle" ctl send idle a b c d
expect 3 "send -t on a full channel" ctl send -t 100 idle e
[ "$(stat_field idle len)" = 4 ] || fail "timed-out send delivered: len $(stat_field idle len)"
expect 3 "recv -t stops at the deadline after draining" ctl recv -t 100 idle
[ "$(tr '\n' ' ' <"$tmp/out")" = "a b c d " ] || fail "recv -t printed '$(cat "$tmp/out")'"
expect 1 "open with another capacity" ctl send -c 5 idle x
err_says "another capacity" "open with another capacity"

# --- -z: NUL-separated messages may hold newlines ---------------------------
printf 'line one\nline two\0second\0' | ctl send -z nul >"$tmp/out" 2>"$tmp/err" ||
    fail "send -z: $(cat "$tmp/err")"
ctl recv -z nul -n 2 | od -c >"$tmp/z.out" 2>"$tmp/err" || fail "recv -z: $(cat "$tmp/err")"
printf 'line one\nline two\0second\0' | od -c | cmp -s - "$tmp/z.out" ||
    fail "recv -z printed: $(cat "$tmp/z.out")"

# --- stat, ls with a prefix, rm -------------------------------------------------
expect 0 "stat idle" ctl stat idle
for f in name incarnation cap len unacked senders receivers closed; do
    grep -q "^$f " "$tmp/out" || fail "stat lacks $f: $(cat "$tmp/out")"
done
grep -Eq '^incarnation [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' \
    "$tmp/out" || fail "stat incarnation: $(grep incarnation "$tmp/out")"
expect 0 "ls with a prefix" ctl ls me
[ "$(awk 'NR > 1 { print $1 }' "$tmp/out" | tr '\n' ' ')" = "meet " ] ||
    fail "ls me: $(cat "$tmp/out")"
expect 0 "rm idle" ctl rm idle
expect 1 "stat after rm" ctl stat idle
expect 0 "ls after rm" ctl ls
grep -q '^idle ' "$tmp/out" && fail "rm left idle in ls"

# --- a broker that is not there: exit 1 promptly -------------------------------
kill -KILL "$chand_pid"
wait "$chand_pid" 2>/dev/null
chand_pid=
start=$(date +%s)
expect 1 "ls with no broker" ctl ls
err_says "connect $addr" "ls with no broker"
[ $(($(date +%s) - start)) -le 10 ] || fail "ls with no broker took over 10 s"

finish
