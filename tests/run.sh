#!/usr/bin/env bash
# Runs each test program given on the command line, bounded in time, and ends with the summary
# line "N passed, N failed". A program passes when it exits 0. TEST_TIMEOUT (seconds) bounds each.
set -u
timeout_s=${TEST_TIMEOUT:-900}
pass=0; fail=0; failed=()
for prog in "$@"; do
    name=${prog#"${BUILD:-build}/"}
    start=$(date +%s%N)
    echo "=== $name"
    timeout --kill-after=10 "$timeout_s" "$prog"
    rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    secs="$((ms / 1000)).$(( (ms % 1000) / 100 ))"
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1)); echo "--- ok   $name (${secs}s)"
    else
        fail=$((fail + 1)); failed+=("$name"); echo "--- FAIL $name (exit $rc, ${secs}s)"
    fi
done
echo
[ $fail -gt 0 ] && printf 'failed: %s\n' "${failed[@]}"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
