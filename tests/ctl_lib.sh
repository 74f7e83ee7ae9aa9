# ctl_lib.sh: shell helpers for the tests that drive a real chand with
# chanctl and the example programs. Sourced, not run. Provides:
#   start_chand        start $CHAND on --port 0, set $port, $addr, $chand_pid
#   fail MSG           record a failure (the test exits 1 at the end)
#   ctl ARGS...        chanctl against that broker, bounded by timeout(1)
#   stat_field N F     field F of `chanctl stat N` (empty if N is missing)
#   wait_stat N F V    wait (bounded) until stat field F of channel N is V
#   finish             print the verdict and exit with it
# Callers set $test_name first. The EXIT trap stops every process started
# through start_chand and bg, and removes $tmp.

: "${CHAND:?CHAND must name the chand binary (make check sets it)}"
: "${CHANCTL:?CHANCTL must name the chanctl binary (make check sets it)}"

fails=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/$test_name.XXXXXX") || exit 99
chand_pid=
bg_pids=

ctl_cleanup() {
    for p in $bg_pids $chand_pid; do
        kill -KILL "$p" 2>/dev/null
    done
    for p in $bg_pids $chand_pid; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap ctl_cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

finish() {
    if [ "$fails" -eq 0 ]; then
        echo "PASS: $test_name"
        exit 0
    fi
    echo "$test_name: $fails failure(s); chand log:"
    sed 's/^/  chand: /' "$tmp/chand.log" 2>/dev/null | tail -n 40
    exit 1
}

# Start a broker on a free port. Not under timeout(1): $chand_pid must be
# chand itself, so that killing it kills the broker; the test's own bound
# and the EXIT trap end it.
start_chand() {
    "$CHAND" --port 0 --port-file "$tmp/port" >"$tmp/chand.log" 2>&1 </dev/null &
    chand_pid=$!
    i=0
    while [ ! -s "$tmp/port" ] && [ $i -lt 200 ]; do
        kill -0 "$chand_pid" 2>/dev/null || break
        sleep 0.05
        i=$((i + 1))
    done
    port=$(tr -dc 0-9 <"$tmp/port" 2>/dev/null)
    if [ -z "$port" ]; then
        echo "FAIL: chand did not start:"
        cat "$tmp/chand.log"
        exit 1
    fi
    addr=127.0.0.1:$port
}

ctl() {
    timeout 20 "$CHANCTL" -s "$addr" "$@"
}

# Run a command in the background, remembered for cleanup; its pid in $!.
bg() {
    "$@" &
    bg_pids="$bg_pids $!"
}

stat_field() {
    ctl stat "$1" 2>/dev/null | awk -v f="$2" '$1 == f { print $2 }'
}

wait_stat() {
    i=0
    while [ "$(stat_field "$1" "$2")" != "$3" ]; do
        i=$((i + 1))
        if [ $i -gt 200 ]; then
            fail "channel $1: $2 stayed '$(stat_field "$1" "$2")', want '$3'"
            return 1
        fi
        sleep 0.05
    done
    return 0
}
