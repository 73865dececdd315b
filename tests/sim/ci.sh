#!/usr/bin/env bash
# The simulator in `make test` (about a minute on 2 cores): every seed in seeds.txt (seeds that
# once found a bug) and 1,000 fresh seeds under AddressSanitizer + UBSan, then 10,000 seeds with
# the release build. Exits non-zero on any failure. SIM_SEEDS overrides the release count.
set -u -o pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
rc=0
while read -r seed _; do
    case "$seed" in ''|*[!0-9]*) continue ;; esac
    "$BUILD/sim" --seed "$seed" | tail -1 | grep -q '^1 passed' || { echo "seed $seed failed"; rc=1; }
done < tests/sim/seeds.txt
"$BUILD/sim" --seeds 1000 --first 1000001 | tail -2 || rc=1
"$BUILD/sim-rel" --seeds "${SIM_SEEDS:-10000}" --first 1 | tail -2 || rc=1
exit $rc
