#!/usr/bin/python3
"""walraft from Python's standard sqlite3 module.

This process loads the extension (build/walraft.so), opens its database with the walraft VFS and
bootstraps a cluster: it hosts node n1, so it is the process that can write that database. Two
more nodes run as `walraft serve` processes and join through it. The program writes here, then
reads a replica's file with plain sqlite3 (no extension), and shows what a write on a replica
returns.

    BUILD=build /usr/bin/python3 examples/python_example.py

Exits 0 when every check passed. Every process it starts is stopped by pid when it ends.
"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

BUILD = os.path.abspath(os.environ.get("BUILD", "build"))
EXTENSION = os.path.join(BUILD, "walraft.so")
WALRAFT = os.path.join(BUILD, "walraft")
PARAMS = "raft_election_timeout_ms=500&raft_heartbeat_ms=50"


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def remote_status(addr):
    """A node's status JSON, asked over the network (walraft status), or None."""
    r = subprocess.run([WALRAFT, "status", "--timeout-ms", "1000", addr],
                       capture_output=True, text=True, timeout=10)
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_for(what, fn, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit("python_example: timed out waiting for " + what)


def main():
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        sys.exit("python_example: this Python's sqlite3 module cannot load extensions (it was "
                 "built without enable_load_extension). Use Debian's /usr/bin/python3, or a "
                 "Python built with --enable-loadable-sqlite-extensions.")
    for f in (EXTENSION, WALRAFT):
        if not os.path.exists(f):
            sys.exit("python_example: %s is missing: run make (or set BUILD)" % f)

    root = tempfile.mkdtemp(prefix="walraft-py-")
    procs = []
    ok = False
    try:
        # Load once, into any connection: the extension stays loaded, registers the VFS
        # "walraft" and adds the raft_* functions to every connection opened afterwards.
        boot = sqlite3.connect(":memory:")
        boot.enable_load_extension(True)
        boot.load_extension(EXTENSION)
        boot.enable_load_extension(False)

        p1, p2, p3 = free_ports(3)
        a1, a2, a3 = ("127.0.0.1:%d" % p for p in (p1, p2, p3))
        path = os.path.join(root, "app.db")
        db = sqlite3.connect("file:%s?vfs=walraft&%s" % (path, PARAMS), uri=True,
                             isolation_level=None, timeout=5.0)
        print(db.execute("SELECT raft_bootstrap('n1', ?)", (a1,)).fetchone()[0])
        wait_for("n1 to lead", lambda: db.execute("SELECT raft_role()").fetchone()[0] == "leader")

        # Two more members, each a `walraft serve` process with its own copy of the database.
        for name, addr in (("n2", a2), ("n3", a3)):
            os.mkdir(os.path.join(root, name))
            log = open(os.path.join(root, name + ".log"), "wb")
            procs.append(subprocess.Popen(
                [WALRAFT, "serve", os.path.join(root, name, "app.db"), "--id", name,
                 "--listen", addr, "--join", a1, "-p", "raft_election_timeout_ms=500",
                 "-p", "raft_heartbeat_ms=50"], stdout=log, stderr=log))
        wait_for("3 members", lambda: db.execute(
            "SELECT count(*) FROM raft_nodes").fetchone()[0] == 3)
        for row in db.execute("SELECT id, address, role, is_leader FROM raft_nodes"):
            print("member", *row)

        # Writes: the ordinary sqlite3 API. A transaction commits once a quorum holds it.
        db.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
        with db:
            db.execute("BEGIN")
            db.executemany("INSERT INTO notes(body) VALUES (?)",
                           [("note %d" % i,) for i in range(100)])
        index = db.execute("SELECT raft_barrier()").fetchone()[0]
        print("wrote 100 notes; commit index", index)

        # A replica applies committed entries to its file; any SQLite reader can open it.
        wait_for("n2 to apply index %d" % index,
                 lambda: (remote_status(a2) or {}).get("applied_index", 0) >= index)
        replica = sqlite3.connect("file:%s?mode=ro" % os.path.join(root, "n2", "app.db"),
                                  uri=True)
        n = replica.execute("SELECT count(*) FROM notes").fetchone()[0]
        print("plain sqlite3 on n2's file reads", n, "notes")
        assert n == 100, n
        replica.close()

        # Writing a replica is refused: only the node's process can write, and only the
        # leader's process accepts writes at all. (Here: this process opens n3's file, whose
        # node runs in the serve process, so the write lock is taken.)
        other = sqlite3.connect("file:%s?vfs=walraft" % os.path.join(root, "n3", "app.db"),
                                uri=True, timeout=0.5)
        try:
            other.execute("INSERT INTO notes(body) VALUES ('sneaky')")
            other.commit()
            raise SystemExit("python_example: a write on a replica succeeded")
        except sqlite3.OperationalError as e:
            print("a write on n3's copy from another process is refused:", e)
        other.close()

        print("leader:", db.execute("SELECT raft_leader(), raft_leader('address')").fetchone())
        status = json.loads(db.execute("SELECT raft_status()").fetchone()[0])
        print("term %d, commit %d, applied %d" % (status["term"], status["commit_index"],
                                                  status["applied_index"]))

        # Clean shutdown: the serve processes exit 0 on SIGTERM; the node of this process stops
        # when the process exits (or earlier, when the application decides).
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            rc = p.wait(30)
            assert rc == 0, "walraft serve exited %d" % rc
        db.close()
        ok = True
        print("python_example: ok")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("python_example: files kept in", root, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
