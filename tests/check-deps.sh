#!/usr/bin/env bash
# Checks the module boundaries of DESIGN §2 by grepping #include lines. Exit 1 on a violation.
set -u
cd "$(dirname "$0")/.."
bad=0
forbid() { # forbid GLOB-LIST REGEX WHY
    local files=$1 re=$2 why=$3 f
    for f in $files; do
        [ -f "$f" ] || continue
        if grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($re)[>\"]" "$f"; then
            echo "check-deps: $f: $why"; bad=1
        fi
    done
}
core=$(ls consensus/*.c consensus/*.h 2>/dev/null)
forbid "$core" 'uv\.h|sqlite3\.h|unistd\.h|time\.h|sys/.*|pthread\.h|fcntl\.h|stdio\.h' \
    "the Raft core does no I/O, has no clock and no threads"
forbid "$core" 'consensus/io/.*|wal/.*|vfs/.*|ext/.*' "the Raft core depends on nothing else"
wal=$(ls wal/*.c wal/*.h 2>/dev/null)
forbid "$wal" 'uv\.h|sqlite3\.h|consensus/.*|vfs/.*|ext/.*' "wal/ is pure: no libuv, no sqlite3 API"
io=$(ls consensus/io/*.c consensus/io/*.h 2>/dev/null)
forbid "$io" 'sqlite3\.h|vfs/.*|ext/.*|wal/.*' "the runtime knows nothing of SQLite"
vfs=$(ls vfs/*.c vfs/*.h 2>/dev/null)
forbid "$vfs" 'consensus/.*|uv\.h|ext/.*' "vfs/ talks to a node only through its own interface"
notext=$(ls wal/* consensus/*.[ch] consensus/io/* vfs/* 2>/dev/null)
forbid "$notext" 'ext/.*' "nothing includes ext/ but shell/"
if [ $bad -ne 0 ]; then echo "check-deps: FAILED"; exit 1; fi
echo "check-deps: module boundaries hold"
