#!/bin/sh
# broker_cli_test.sh: chand's command line. Version and help, the one-line
# refusal with exit status 2 for unknown flags and bad values, and --port 0
# printing the address it listens on and writing the port file.
# Every chand run is bounded by timeout(1).

set -u

: "${CHAND:?CHAND must name the chand binary (make check sets it)}"

fails=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chand-cli.XXXXXX") || exit 99
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# run NAME ARGS...: run chand with ARGS, stdout and stderr to $tmp/NAME.out, status in $rc.
run() {
    name=$1
    shift
    timeout 5 "$CHAND" "$@" >"$tmp/$name.out" 2>&1 </dev/null
    rc=$?
}

lines() {
    wc -l <"$1" | tr -d ' '
}

run version --version
[ "$rc" -eq 0 ] || fail "--version exited $rc"
grep -Eq '^chand [0-9]+\.[0-9]+\.[0-9]+$' "$tmp/version.out" ||
    fail "--version printed '$(cat "$tmp/version.out")', want 'chand X.Y.Z'"

run help --help
[ "$rc" -eq 0 ] || fail "--help exited $rc"
grep -q -- '--port' "$tmp/help.out" || fail "--help does not mention --port"
grep -q -- '--max-msg' "$tmp/help.out" || fail "--help does not mention --max-msg"

# refused: exit 2 and exactly one line that names what was wrong
refused() {
    name=$1
    word=$2
    shift 2
    run "$name" "$@"
    [ "$rc" -eq 2 ] || fail "chand $*: exit $rc, want 2"
    [ "$(lines "$tmp/$name.out")" -eq 1 ] ||
        fail "chand $*: printed $(lines "$tmp/$name.out") lines, want 1: $(cat "$tmp/$name.out")"
    grep -q -- "$word" "$tmp/$name.out" ||
        fail "chand $*: message '$(cat "$tmp/$name.out")' does not name '$word'"
}

refused unknown --no-such-flag --no-such-flag
refused port_word --port --port abc
refused port_big --port --port 70000
refused port_neg --port --port -1
refused maxmsg --max-msg --max-msg lots
refused maxconns --max-conns --max-conns -5

# --port 0: prints the listening line and writes the same port to the file
portfile=$tmp/port
timeout 10 "$CHAND" --port 0 --port-file "$portfile" >"$tmp/listen.out" 2>&1 </dev/null &
pid=$!
i=0
while [ ! -s "$portfile" ] && [ $i -lt 100 ]; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
    i=$((i + 1))
done
if [ -s "$portfile" ]; then
    port=$(cat "$portfile")
    case $port in
    '' | *[!0-9]*) fail "port file holds '$port'" ;;
    *)
        [ "$port" -gt 0 ] || fail "port file holds port $port"
        # the line is written before or about when the file appears
        i=0
        while ! grep -q "chand listening on " "$tmp/listen.out" && [ $i -lt 40 ]; do
            sleep 0.05
            i=$((i + 1))
        done
        grep -Eq "^chand listening on 127\.0\.0\.1:$port\$" "$tmp/listen.out" ||
            fail "--port 0 printed '$(cat "$tmp/listen.out")', want 'chand listening on 127.0.0.1:$port'"
        ;;
    esac
else
    fail "--port 0 --port-file wrote no port within 5 s: $(cat "$tmp/listen.out")"
fi
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
pid=
[ "$rc" -eq 0 ] || fail "chand exited $rc after SIGTERM, want 0"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "all CLI checks passed"
exit 0
