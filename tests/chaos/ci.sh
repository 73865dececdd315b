#!/usr/bin/env bash
# The bounded fault-injection run of `make chaos` and `make test`: a few seeds of
# tests/chaos/chaos.py (about five minutes on two cores). Needs $BUILD/tests/chaosnode.
# Ends with "N passed, M failed"; exits non-zero when a seed failed.
set -u
cd "$(dirname "$0")/../.." || exit 1
exec /usr/bin/python3 tests/chaos/chaos.py --ci "$@"
