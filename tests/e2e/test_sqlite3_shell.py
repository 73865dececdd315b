#!/usr/bin/python3
"""The replicated database driven through the real sqlite3 shell binary: three `sqlite3`
processes each `.load` the release extension, `.open` their database with the walraft VFS and
run the cluster through SQL, as a user pasting the README's quick start would.

Every process started here is killed by pid at the end, whatever happens.
"""
import os
import select
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Failure, check, free_ports, run_tests, wait_for  # noqa: E402

BUILD = os.path.abspath(os.environ.get("BUILD", "build"))
EXT = os.path.join(BUILD, "walraft.so")
SENTINEL = "@@walraft-done@@"


class Shell:
    """One interactive sqlite3 shell; answers are delimited by a .print sentinel."""

    def __init__(self, c, name, port):
        self.name = name
        self.port = port
        self.path = os.path.join(c.root, name + ".db")
        self.p = subprocess.Popen(["sqlite3", "-batch"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, WALRAFT_LOG="warn"))
        c.pids.append(self.p.pid)
        self.buf = b""
        out = self.run(".load %s" % EXT)
        check(out == "", "%s: .load said %r" % (name, out))
        out = self.run(".open file:%s?vfs=walraft&raft_election_timeout_ms=500"
                       "&raft_heartbeat_ms=50" % self.path)
        check(out == "", "%s: .open said %r" % (name, out))

    def run(self, sql, timeout=30):
        self.p.stdin.write(("%s\n.print %s\n" % (sql, SENTINEL)).encode())
        self.p.stdin.flush()
        deadline = time.monotonic() + timeout
        while SENTINEL.encode() not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("%s: no answer to %r" % (self.name, sql))
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    raise Failure("%s: sqlite3 exited (%s)" % (self.name, self.p.poll()))
                self.buf += chunk
        out, _, rest = self.buf.partition((SENTINEL + "\n").encode())
        self.buf = rest
        return out.decode().strip()

    def quit(self):
        self.p.stdin.write(b".quit\n")
        self.p.stdin.flush()
        rc = self.p.wait(30)
        # sqlite3 exits 1 when any statement it read failed (n2's refused write): only a signal
        # (a crash while the nodes stop at exit) is a failure here.
        check(rc in (0, 1), "%s: sqlite3 exited with %s" % (self.name, rc))


def test_three_sqlite3_shells_form_a_cluster():
    c = Cluster(None)
    ok = False
    try:
        ports = free_ports(3)
        n1, n2, n3 = (Shell(c, "n%d" % (i + 1), ports[i]) for i in range(3))
        out = n1.run("SELECT raft_bootstrap('n1', '127.0.0.1:%d');" % ports[0])
        check(out.startswith("bootstrapped n1"), "bootstrap: " + out)
        n1.run("SELECT raft_barrier(5000);")
        for n in (n2, n3):
            out = n.run("SELECT raft_join('%s', '127.0.0.1:%d', '127.0.0.1:%d');"
                        % (n.name, n.port, ports[0]))
            check(out.startswith("joined as " + n.name), "join: " + out)
        n1.run("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT);")
        for i in range(20):
            out = n1.run("INSERT INTO kv VALUES ('k%d', 'v%d');" % (i, i))
            check(out == "", "insert on the leader: " + out)
        for n in (n2, n3):
            n.run("SELECT raft_barrier(5000);")
            check(n.run("SELECT count(*) FROM kv;") == "20", "20 rows on " + n.name)
        out = n2.run("INSERT INTO kv VALUES ('x', 'y');")
        check("readonly" in out, "a write on a follower is refused: " + out)
        check(n2.run("SELECT raft_leader() || ' ' || raft_leader('address');")
              == "n1 127.0.0.1:%d" % ports[0], "n2 names the leader")
        out = n1.run("SELECT id, role, is_leader FROM raft_nodes ORDER BY id;")
        check(out.split() == ["n1|voter|1", "n2|voter|0", "n3|voter|0"], "raft_nodes: " + out)
        out = n1.run("SELECT raft_transfer('n2');")
        check(out == "n2", "transfer to n2: " + out)
        wait_for("n2 to accept writes",
                 lambda: n2.run("INSERT INTO kv VALUES ('after', 'transfer');") == "", 10)
        for n in (n1, n3):
            n.run("SELECT raft_barrier(5000);")
            check(n.run("SELECT v FROM kv WHERE k = 'after';") == "transfer",
                  "the new leader's write on " + n.name)
        sums = {n.name: n.run("SELECT raft_checksum();") for n in (n1, n2, n3)}
        check(len(set(sums.values())) == 1, "raft_checksum agrees: %s" % sums)
        for n in (n1, n2, n3):
            n.quit()
        # The files are ordinary SQLite databases, identical once checkpointed.
        digests = set()
        for n in (n1, n2, n3):
            con = sqlite3.connect(n.path)
            check(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.close()
            with open(n.path, "rb") as f:
                digests.add(hash(f.read()))
        check(len(digests) == 1, "replicas identical after .quit and checkpoint")
        ok = True
    finally:
        c.cleanup(ok)


if __name__ == "__main__":
    sys.exit(run_tests([("three sqlite3 shells form a cluster",
                         test_three_sqlite3_shells_form_a_cluster)]))
