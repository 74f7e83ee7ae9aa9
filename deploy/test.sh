#!/bin/sh
# test.sh: the README's second command. Installs the packages, builds, and
# runs the whole test suite (make check, then the long fault tests).
set -eu
cd "$(dirname "$0")/.."
sh deploy/install-deps.sh
sh deploy/build.sh
cd build
status=0
make -j2 check || status=$?
[ "$status" -eq 0 ] && { make check-long || status=$?; }

# One closing line over every test case: Check programs report their cases
# ("Checks: N, Failures: F, Errors: E"); every other test counts as one.
passed=0 failed=0
for trs in $(find tests -name "*.trs" | sort); do
    [ -f "$trs" ] || continue
    log=${trs%.trs}.log
    line=$(grep -E '^[0-9]+%: Checks: ' "$log" 2>/dev/null | tail -n 1 || true)
    if [ -n "$line" ]; then
        n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
        f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
        e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
        passed=$((passed + n - f - e)); failed=$((failed + f + e))
    fi
    if grep -q -E '^:test-result: (FAIL|ERROR)' "$trs"; then
        [ -n "$line" ] || failed=$((failed + 1))
        echo "==== $log"; tail -n 60 "$log"
    elif [ -z "$line" ] && grep -q -E '^:test-result: PASS' "$trs"; then
        passed=$((passed + 1))
    fi
done
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || status=1
exit "$status"
