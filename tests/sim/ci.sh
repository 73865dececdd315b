#!/usr/bin/env bash
# The simulator in `make test`: every seed in seeds.txt (seeds that once found a bug) under
# AddressSanitizer, then 1,000 fresh seeds with the release build. Exit non-zero on any failure.
set -u -o pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
rc=0
while read -r seed _; do
    case "$seed" in ''|\#*) continue ;; esac
    "$BUILD/sim" --seed "$seed" | tail -1 | grep -q '^1 passed' || { echo "seed $seed failed"; rc=1; }
done < tests/sim/seeds.txt
"$BUILD/sim-rel" --seeds "${SIM_SEEDS:-1000}" --first "${SIM_FIRST:-1}" || rc=1
"$BUILD/sim" --seeds 50 --first 100001 | tail -2 || rc=1
exit $rc
