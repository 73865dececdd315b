#!/usr/bin/env bash
# A local three-node walraft cluster, end to end, in about half a minute:
#
#   1. n1 bootstraps a cluster; n2 and n3 join it through n1.
#   2. Writes go through the leader; a replica reads them (after raft_barrier()), and so does
#      plain sqlite3 without the extension: every replica is an ordinary SQLite file.
#   3. A write on a follower is refused and names the leader.
#   4. The leader is killed with SIGKILL in the middle of a stream of writes; another node takes
#      over and every write the dead leader acknowledged is there.
#   5. The killed node restarts (reopening its database restarts its node), catches up, and
#      leadership is transferred back to it.
#
# Each node is a `walraft sql` process that hosts the node of its database and reads SQL from a
# FIFO: a node lives in the process that opened its database, and only that process can write
# it. Everything runs under a temporary directory on 127.0.0.1; every process is stopped by pid
# when the script exits, whatever happens. Exit status 0 when every check passed.
#
#   BUILD=build examples/cluster.sh      (make demo builds what it needs, then runs this)
#   KEEP=1 examples/cluster.sh           keep the directory (logs, databases) afterwards
set -euo pipefail

BUILD=${BUILD:-build}
BUILD=$(cd "$BUILD" && pwd)
WALRAFT=$BUILD/walraft
STEP_TIMEOUT=30   # seconds any single wait may take
TOTAL_TIMEOUT=120 # seconds the whole demo may take
[ -x "$WALRAFT" ] || { echo "cluster.sh: $WALRAFT is missing: run make first" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "cluster.sh: the sqlite3 shell is missing (make deps)" >&2; exit 1; }

DIR=$(mktemp -d "${TMPDIR:-/tmp}/walraft-demo.XXXXXX")
declare -A PID=() PORT=()
OK=0
T0=$SECONDS
END=$((SECONDS + TOTAL_TIMEOUT))

cleanup() {
    local k
    for k in "${!PID[@]}"; do
        kill -9 "${PID[$k]}" 2>/dev/null || true
        wait "${PID[$k]}" 2>/dev/null || true
    done
    if [ "$OK" = 1 ] && [ -z "${KEEP:-}" ]; then
        rm -rf "$DIR"
    else
        echo "cluster.sh: logs and databases kept in $DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
note() { printf '   %s\n' "$*"; }
fail() { printf '\ncluster.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# Three free TCP ports on 127.0.0.1, picked by binding port 0.
read -r PORT[n1] PORT[n2] PORT[n3] < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
addr() { echo "127.0.0.1:${PORT[$1]}"; }

# Faster elections than the defaults, so the failover below takes well under a second or two.
PARAMS=(-p raft_election_timeout_ms=500 -p raft_heartbeat_ms=50)

# start NODE: runs `walraft sql` on NODE's database, reading from NODE's FIFO. The FIFO is
# opened read-write by the node so it never sees end-of-file between our writes.
start() {
    local k=$1
    mkdir -p "$DIR/$k"
    [ -p "$DIR/$k.in" ] || mkfifo -m 600 "$DIR/$k.in"
    WALRAFT_LOG=info "$WALRAFT" sql "${PARAMS[@]}" "$DIR/$k/app.db" \
        <>"$DIR/$k.in" >>"$DIR/$k.out" 2>>"$DIR/$k.log" &
    PID[$k]=$!
}

SEQ=0
# run NODE SQL...: sends SQL (statements or dot-commands, one per argument) to NODE, waits for
# it to be done, prints its output indented. Fails when the output holds an error line unless
# the variable EXPECT_ERROR is set.
run() {
    local k=$1; shift
    SEQ=$((SEQ + 1))
    local mark="#done-$SEQ" out="$DIR/$k.out" err="$DIR/$k.log"
    local from efrom
    from=$(stat -c %s "$out" 2>/dev/null || echo 0)
    efrom=$(stat -c %s "$err" 2>/dev/null || echo 0)
    printf '%s\n' "$@" ".print $mark" >"$DIR/$k.in"
    local deadline=$((SECONDS + STEP_TIMEOUT))
    until tail -c +$((from + 1)) "$out" | grep -qxF -- "$mark"; do
        kill -0 "${PID[$k]}" 2>/dev/null || fail "$k exited; see $err"
        [ $SECONDS -lt $deadline ] || fail "$k did not answer within ${STEP_TIMEOUT}s: $*"
        [ $SECONDS -lt $END ] || fail "the demo took longer than ${TOTAL_TIMEOUT}s"
        sleep 0.05
    done
    RESULT=$(tail -c +$((from + 1)) "$out" | grep -vxF -- "$mark" || true)
    ERRORS=$(tail -c +$((efrom + 1)) "$err" | grep -E '^(error:|       )' || true)
    [ -n "$RESULT" ] && printf '%s\n' "$RESULT" | sed 's/^/   | /'
    [ -n "$ERRORS" ] && printf '%s\n' "$ERRORS" | sed 's/^/   ! /'
    if [ -n "$ERRORS" ] && [ -z "${EXPECT_ERROR:-}" ]; then
        fail "$k: $*"
    fi
    return 0
}

# value NODE SQL: the single value a query prints in list mode.
value() {
    local k=$1
    run "$k" ".mode list" "${2%;};" ".mode columns" >/dev/null
    printf '%s' "$RESULT"
}

# status_of NODE FIELD: a field of the node's status, asked over the network (walraft status).
status_of() {
    "$WALRAFT" status --timeout-ms 1000 "$(addr "$1")" 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])" 2>/dev/null || true
}

wait_until() { # wait_until WHAT COMMAND...: retries COMMAND for up to STEP_TIMEOUT seconds
    local what=$1; shift
    local deadline=$((SECONDS + STEP_TIMEOUT))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"
        [ $SECONDS -lt $END ] || fail "the demo took longer than ${TOTAL_TIMEOUT}s"
        sleep 0.1
    done
}
is_leader() { [ "$(status_of "$1" state)" = leader ]; }

say "A three-node cluster under $DIR"
note "walraft: $WALRAFT; nodes n1 $(addr n1), n2 $(addr n2), n3 $(addr n3)"
start n1
run n1 "SELECT raft_bootstrap('n1', '$(addr n1)');"
wait_until "n1 to lead" is_leader n1
for k in n2 n3; do
    start "$k"
    run "$k" "SELECT raft_join('$k', '$(addr $k)', '$(addr n1)');"
done
note "walraft status --pretty $(addr n1):"
three_members() { [ "$(value n1 "SELECT count(*) FROM raft_nodes")" = 3 ]; }
wait_until "3 members" three_members
"$WALRAFT" status --pretty "$(addr n1)" | sed 's/^/   | /'

say "Writes go through the leader (n1)"
run n1 "CREATE TABLE accounts(id INTEGER PRIMARY KEY, owner TEXT, balance INTEGER);" \
    "INSERT INTO accounts(owner, balance) VALUES ('ada', 100), ('grace', 250), ('linus', 75);" \
    "BEGIN; UPDATE accounts SET balance = balance - 30 WHERE owner = 'grace';
            UPDATE accounts SET balance = balance + 30 WHERE owner = 'ada'; COMMIT;" \
    "SELECT * FROM accounts;"

say "A replica (n3) reads them, after raft_barrier() for an up-to-date read"
run n3 "SELECT raft_barrier() AS applied_up_to;" "SELECT * FROM accounts;"
run n2 "SELECT raft_barrier() AS applied_up_to;" >/dev/null
note "plain sqlite3 (no extension) reading n2's file $DIR/n2/app.db:"
sqlite3 -header -column "$DIR/n2/app.db" "SELECT owner, balance FROM accounts;" | sed 's/^/   | /'
total=$(sqlite3 "$DIR/n2/app.db" "SELECT sum(balance) FROM accounts;")
[ "$total" = 425 ] || fail "plain sqlite3 read a total of '$total' on n2, expected 425"

say "A follower refuses writes and names the leader"
EXPECT_ERROR=1 run n2 "INSERT INTO accounts(owner, balance) VALUES ('mallory', 1000000);"
[ -n "$ERRORS" ] || fail "a write on follower n2 succeeded"
grep -q 'leader is n1' <<<"$ERRORS" || fail "the refusal does not name the leader n1"

say "Kill -9 the leader in the middle of a stream of writes"
run n1 "CREATE TABLE events(id INTEGER PRIMARY KEY, at TEXT);" >/dev/null
# Each INSERT prints its id only after its commit returned, i.e. after a quorum holds it durably.
from_ack=$(stat -c %s "$DIR/n1.out")
{
    echo ".mode list"
    for i in $(seq 1 3000); do
        echo "INSERT INTO events(id, at) VALUES ($i, datetime('now')) RETURNING id;"
    done
} >"$DIR/n1.in" &
feeder=$!
acked() { tail -c +$((from_ack + 1)) "$DIR/n1.out" | grep -cxE '[0-9]+' || true; }
some_acked() { [ "$(acked)" -ge 200 ]; }
wait_until "200 acknowledged writes" some_acked
kill -9 "${PID[n1]}"
wait "${PID[n1]}" 2>/dev/null || true
unset 'PID[n1]'
kill "$feeder" 2>/dev/null || true
wait "$feeder" 2>/dev/null || true
t_kill=$(date +%s%N)
ACKED=$(tail -c +$((from_ack + 1)) "$DIR/n1.out" | grep -xE '[0-9]+' | paste -sd, -)
n_acked=$(tr ',' '\n' <<<"$ACKED" | grep -c . || true)
note "n1 (pid killed) had acknowledged $n_acked writes"

new=""
find_leader() {
    local k
    for k in n2 n3; do
        if is_leader "$k"; then new=$k; return 0; fi
    done
    return 1
}
wait_until "a new leader" find_leader
note "new leader: $new, elected $(( ($(date +%s%N) - t_kill) / 1000000 )) ms after the kill"
run "$new" ".leader"
run "$new" "SELECT raft_barrier() AS applied_up_to;" >/dev/null
lost=$(value "$new" "SELECT count(*) FROM json_each('[$ACKED]') WHERE value NOT IN (SELECT id FROM events);")
present=$(value "$new" "SELECT count(*) FROM events;")
note "acknowledged: $n_acked; present on $new: $present; acknowledged but missing: $lost"
[ "$lost" = 0 ] || fail "$lost acknowledged writes are missing after the failover"
[ "$present" -ge "$n_acked" ] || fail "fewer rows than acknowledged writes"
inflight=$((present - n_acked))
note "($inflight more write(s) committed that n1 never acknowledged: in flight when it died, their"
note " outcome was unknown to the client. A write whose commit never returned may go either way.)"
run "$new" "INSERT INTO accounts(owner, balance) VALUES ('margaret', 500);" \
    "SELECT count(*) AS accounts, sum(balance) AS total FROM accounts;"

say "n1 restarts: reopening its database restarts its node, which catches up"
start n1
n1_follows() { [ "$(status_of n1 leader)" = "$new" ]; }
wait_until "n1 to rejoin" n1_follows
run n1 "SELECT raft_barrier() AS applied_up_to;" "SELECT raft_role() AS role, count(*) AS events FROM events;"
[ "$(value n1 "SELECT count(*) FROM events;")" = "$present" ] || fail "n1 did not catch up"

say "Leadership goes back to n1 (raft_transfer on $new)"
run "$new" ".transfer n1"
wait_until "n1 to lead again" is_leader n1
run n1 ".nodes"
run n1 "INSERT INTO accounts(owner, balance) VALUES ('barbara', 42);" >/dev/null
expect=$(value n1 "SELECT count(*) || ' accounts, total ' || sum(balance) FROM accounts;")
for k in n2 n3; do
    # The barrier in a statement of its own: a statement reads the snapshot it started with.
    [ "$(value "$k" "SELECT raft_barrier() > 0;")" = 1 ] || fail "raft_barrier() on $k"
    got=$(value "$k" "SELECT count(*) || ' accounts, total ' || sum(balance) FROM accounts;")
    [ "$got" = "$expect" ] || fail "$k reads '$got', the leader '$expect'"
done
note "every node reads: $expect"

say "Stopping every node cleanly"
for k in n1 n2 n3; do
    printf '.quit\n' >"$DIR/$k.in"
done
for k in n1 n2 n3; do
    deadline=$((SECONDS + STEP_TIMEOUT))
    while kill -0 "${PID[$k]}" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || fail "$k did not stop"
        sleep 0.05
    done
    wait "${PID[$k]}" 2>/dev/null || true
    unset "PID[$k]"
done
OK=1
say "Demo passed in $((SECONDS - T0)) s"
