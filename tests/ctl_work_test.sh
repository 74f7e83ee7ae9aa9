#!/bin/sh
# ctl_work_test.sh: `chanctl work` against a real chand: each message runs
# the job once with the message on stdin, exit 0 acks, a failure gives the
# message back first in line, -n stops early, a missing command loses
# nothing, a killed worker loses nothing, a job that outlives its lease
# sees its message handed out again; and -T / $CHAND_TOKEN_FILE for auth.

# Bound the whole test; the EXIT trap still cleans up on a timeout.
[ -n "${CTL_TEST_BOUNDED:-}" ] || CTL_TEST_BOUNDED=1 exec timeout 120 sh "$0" "$@"
set -u
test_name=ctl_work_test
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

# same FILE EXPECTED DESCRIPTION: FILE holds exactly EXPECTED (printf %b).
same() {
    printf '%b' "$2" >"$tmp/want"
    cmp -s "$1" "$tmp/want" || fail "$3: got '$(cat "$1")', want '$(cat "$tmp/want")'"
}

start_chand

# --- usage ---------------------------------------------------------------
expect 0 "--help" "$CHANCTL" --help
grep -q 'work NAME -- CMD' "$tmp/out" || fail "--help does not describe work"
grep -q -- '--lease' "$tmp/out" || fail "--help does not describe -l"
grep -q -- '--token-file' "$tmp/out" || fail "--help does not describe -T"
expect 2 "work without a command" ctl work jobs
expect 2 "work without anything" ctl work
expect 2 "-l on recv" ctl recv jobs -l 100
expect 2 "-l 0" ctl work jobs -l 0 -- true
expect 2 "-z on work" ctl work jobs -z -- true

# --- every message runs the job once, in order, then the channel is drained
ctl send jobs one two three four five || fail "send jobs"
ctl close jobs || fail "close jobs"
expect 0 "work on five jobs" ctl work jobs -- sh -c 'cat >>"$1"; echo >>"$1"' job "$tmp/done"
same "$tmp/done" 'one\ntwo\nthree\nfour\nfive\n' "work on five jobs"
[ "$(stat_field jobs len)" = 0 ] || fail "jobs not drained: len $(stat_field jobs len)"
[ "$(stat_field jobs unacked)" = 0 ] || fail "jobs left unacked: $(stat_field jobs unacked)"

# --- a failing job gives its message back, first in line ------------------
ctl send flaky ok1 bad ok2 || fail "send flaky"
ctl close flaky || fail "close flaky"
cat >"$tmp/flaky.sh" <<'EOF'
m=$(cat)
if [ "$m" = bad ] && [ ! -e "$1/failed-once" ]; then
    : >"$1/failed-once"
    exit 1
fi
echo "$m" >>"$1/flaky.out"
EOF
expect 0 "work with a failing job" ctl work flaky -- sh "$tmp/flaky.sh" "$tmp"
[ -e "$tmp/failed-once" ] || fail "the failing job never ran"
same "$tmp/flaky.out" 'ok1\nbad\nok2\n' "the failed message is retried before the next"

# --- -n stops after N messages; the rest stay ------------------------------
ctl send three a b c || fail "send three"
expect 0 "work -n 2" ctl work three -n 2 -- sh -c 'cat >>"$1"; echo >>"$1"' job "$tmp/two"
same "$tmp/two" 'a\nb\n' "work -n 2"
[ "$(stat_field three len)" = 1 ] || fail "work -n 2 left len $(stat_field three len), want 1"

# --- -t: no message within the deadline ------------------------------------
expect 3 "work -t on an empty channel" ctl work three -n 5 -t 100 -- cat
# (c was taken by that run: four messages were asked for, one was there)
[ "$(stat_field three len)" = 0 ] || fail "work -t left len $(stat_field three len)"

# --- a command that cannot run: exit 1, the message stays -----------------
ctl send keep precious || fail "send keep"
expect 1 "work with a missing command" ctl work keep -- "$tmp/no-such-command"
grep -q "cannot run" "$tmp/err" || fail "missing command: stderr '$(cat "$tmp/err")'"
[ "$(stat_field keep len)" = 1 ] || fail "missing command lost the message"
[ "$(stat_field keep unacked)" = 0 ] || fail "missing command left it unacked"

# --- a worker killed mid-job loses nothing --------------------------------
ctl send crash job1 || fail "send crash"
"$CHANCTL" -s "$addr" work crash -- sh -c 'echo $$ >"$1"; exec sleep 60' job "$tmp/jobpid" \
    >/dev/null 2>&1 &
worker=$!
bg_pids="$bg_pids $worker"
wait_stat crash unacked 1
kill -KILL "$worker"
wait_stat crash len 1
wait_stat crash unacked 0
[ -s "$tmp/jobpid" ] && kill -KILL "$(cat "$tmp/jobpid")" 2>/dev/null
expect 0 "the job survives its worker" ctl work crash -n 1 -- sh -c 'cat >"$1"' job "$tmp/crash"
same "$tmp/crash" 'job1' "the job survives its worker"

# --- a job that outlives its lease: the message is handed out again -------
ctl send slow tortoise || fail "send slow"
expect 0 "work -l shorter than the job" ctl work slow -n 1 -l 200 -- sh -c 'cat >/dev/null; sleep 1'
grep -q "lease had run out" "$tmp/err" || fail "late ack not reported: stderr '$(cat "$tmp/err")'"
[ "$(stat_field slow len)" = 1 ] || fail "expired lease: len $(stat_field slow len), want 1"

auth_checks() {
    # --- auth: -T and $CHAND_TOKEN_FILE ------------------------------------
    kill -TERM "$chand_pid"
    wait "$chand_pid" 2>/dev/null
    chand_pid=
    printf 'work-token\n' >"$tmp/token"
    "$CHAND" --port 0 --port-file "$tmp/port2" --auth-token-file "$tmp/token" \
        >"$tmp/chand.log" 2>&1 </dev/null &
    chand_pid=$!
    i=0
    while [ ! -s "$tmp/port2" ] && [ $i -lt 200 ]; do
        kill -0 "$chand_pid" 2>/dev/null || break
        sleep 0.05
        i=$((i + 1))
    done
    port=$( { tr -dc 0-9 <"$tmp/port2"; } 2>/dev/null)
    if [ -z "$port" ]; then
        fail "chand --auth-token-file did not start: $(cat "$tmp/chand.log")"
        return
    fi
    addr=127.0.0.1:$port
    expect 1 "no token" ctl ls
    grep -q "connect $addr: Permission denied" "$tmp/err" || fail "no token: stderr '$(cat "$tmp/err")'"
    printf 'wrong\n' >"$tmp/wrong"
    expect 1 "wrong token" ctl -T "$tmp/wrong" ls
    expect 0 "-T" ctl -T "$tmp/token" send locked hello
    expect 0 "CHAND_TOKEN_FILE" env CHAND_TOKEN_FILE="$tmp/token" timeout 20 "$CHANCTL" -s "$addr" \
        recv locked -n 1
    same "$tmp/out" 'hello\n' "recv with CHAND_TOKEN_FILE"
    expect 1 "unreadable token file" ctl -T "$tmp/no-such-file" ls
    grep -q "token file" "$tmp/err" || fail "unreadable token file: stderr '$(cat "$tmp/err")'"
}
auth_checks
finish
