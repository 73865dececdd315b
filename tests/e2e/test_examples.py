#!/usr/bin/env python3
"""Tests of the walraft program (shell/) as a user runs it: usage texts, `sql` in its
one-statement, scripted and dot-command forms, `serve` start, restart and clean shutdown on
SIGTERM and SIGINT, and `status` against running nodes.

Each scenario works in its own temporary directory and kills every process it started, by pid,
whatever happens. The examples themselves (examples/*) run as their own test programs.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Failure, check, free_ports, run_tests, wait_for  # noqa: E402

BUILD = os.path.abspath(os.environ.get("BUILD", "build"))
WALRAFT = os.path.join(BUILD, "walraft")
FAST = ["-p", "raft_election_timeout_ms=500", "-p", "raft_heartbeat_ms=50"]


def run(*args, stdin=None, timeout=60):
    """Runs walraft with args; returns (exit status, stdout, stderr)."""
    r = subprocess.run([WALRAFT] + list(args), input=stdin, capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


class Serve:
    """A `walraft serve` process, recorded by pid in the cluster for cleanup."""

    def __init__(self, c, name, *args):
        self.log_path = os.path.join(c.root, name + ".serve.log")
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen([WALRAFT, "serve"] + list(args), stdout=self.log,
                                  stderr=self.log)
        c.pids.append(self.p.pid)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.p.send_signal(sig)
        rc = self.p.wait(timeout)
        check(rc == 0, "serve exited %s after %s; log %s" % (rc, sig, self.log_path))

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


def status(addr):
    rc, out, _ = run("status", "--timeout-ms", "1000", addr, timeout=10)
    return json.loads(out) if rc == 0 else None


def test_usage_texts_are_there_and_exit_statuses_right():
    rc, out, _ = run("--help")
    check(rc == 0 and "SYNOPSIS" in out, "walraft --help: %s %r" % (rc, out[:80]))
    for cmd in ("serve", "sql", "status"):
        check(cmd in out, "--help mentions " + cmd)
        rc1, a, _ = run("help", cmd)
        rc2, b, _ = run(cmd, "--help")
        check(rc1 == 0 and rc2 == 0 and a == b and "walraft " + cmd in a,
              "help %s / %s --help agree" % (cmd, cmd))
    _, sql_help, _ = run("help", "sql")
    for dot in (".status", ".nodes", ".leader", ".transfer", ".help", ".quit"):
        check(dot in sql_help, "help sql lists " + dot)
    _, serve_help, _ = run("help", "serve")
    for opt in ("--id", "--listen", "--bootstrap", "--join", "--replica", "--param"):
        check(opt in serve_help, "help serve lists " + opt)
    rc, _, err = run("frobnicate")
    check(rc == 2 and "frobnicate" in err, "unknown command: %s %r" % (rc, err))
    rc, _, _ = run("help", "frobnicate")
    check(rc == 2, "help on an unknown command exits 2")
    rc, _, _ = run()
    check(rc == 2, "no command exits 2")


def test_sql_one_statement_prints_a_table_and_fails_with_status_1():
    c = Cluster(WALRAFT)
    ok = False
    try:
        db = os.path.join(c.root, "plain.db")
        rc, out, err = run("sql", db, "CREATE TABLE t(a, b); INSERT INTO t VALUES (1, 'x'), "
                                      "(22, NULL); SELECT a, b FROM t ORDER BY a")
        check(rc == 0, "statements failed: %s" % err)
        lines = out.splitlines()
        check(lines[0].split() == ["a", "b"] and set(lines[1]) <= {"-", " "},
              "header and rule: %r" % lines)
        check(lines[2].split() == ["1", "x"] and lines[3].split() == ["22", "NULL"],
              "rows: %r" % lines)
        check(lines[2].index("1") == lines[3].index("22") + 1, "numbers right-aligned: %r" % lines)
        rc, out, _ = run("sql", "--list", db, "SELECT a, b FROM t ORDER BY a")
        check(rc == 0 and out == "1|x\n22|\n", "--list: %r" % out)
        rc, _, err = run("sql", db, "SELECT * FROM missing")
        check(rc == 1 and err.startswith("error:") and "missing" in err and "SQLITE_ERROR" in err,
              "a failing statement: %s %r" % (rc, err))
        rc, _, err = run("sql", db, "SELEKT 1")
        check(rc == 1 and "syntax error" in err, "a syntax error: %s %r" % (rc, err))
        rc, _, err = run("sql", db, "SELECT raft_role()")
        check(rc == 1 and "no node runs" in err, "raft_role without a node: %r" % err)
        # Scripted input: statements across lines, dot-commands, an error in the middle.
        rc, out, err = run("sql", db, stdin="SELECT\n 40 + 2 AS answer;\n.tables\n"
                                            "SELECT nope;\n.print after\n.mode list\n"
                                            "SELECT 'a', 'b';\n.bogus\n")
        check("answer" in out and "42" in out and "\nt\n" in out, "scripted output: %r" % out)
        check("after\na|b\n" in out, "dot-commands .print, .mode: %r" % out)
        check("no such column: nope" in err and "unknown command .bogus" in err,
              "scripted errors: %r" % err)
        check(rc == 1, "scripted input with failures exits 1, got %s" % rc)
        ok = True
    finally:
        c.cleanup(ok)


def test_sql_prompt_on_a_terminal():
    """The interactive prompt: a greeting, prompts, continuation lines, history, .quit."""
    import pty
    import select
    c = Cluster(WALRAFT)
    ok = False
    try:
        master, slave = pty.openpty()
        env = dict(os.environ, HOME=c.root, TERM="dumb")
        p = subprocess.Popen([WALRAFT, "sql", os.path.join(c.root, "tty.db")], stdin=slave,
                             stdout=slave, stderr=slave, env=env, close_fds=True)
        c.pids.append(p.pid)
        os.close(slave)
        seen = b""

        def expect(text, timeout=10):
            nonlocal seen
            deadline = time.monotonic() + timeout
            while text.encode() not in seen:
                left = deadline - time.monotonic()
                check(left > 0, "no %r on the terminal; got %r" % (text, seen[-300:]))
                r, _, _ = select.select([master], [], [], left)
                if r:
                    try:
                        seen += os.read(master, 4096)
                    except OSError:
                        break
            check(text.encode() in seen, "no %r on the terminal; got %r" % (text, seen[-300:]))
            seen = seen[seen.index(text.encode()) + len(text):]

        expect("no node yet")
        expect("walraft> ")
        os.write(master, b"SELECT 6 * 7\n")
        expect("...> ")
        os.write(master, b"AS answer;\n")
        expect("answer")
        expect("42")
        expect("walraft> ")
        os.write(master, b".quit\n")
        check(p.wait(10) == 0, "exit status after .quit")
        os.close(master)
        _, version, _ = run("--version")
        if "line editing: none" not in version:
            with open(os.path.join(c.root, ".walraft_history")) as f:
                check("SELECT 6 * 7" in f.read(), "history written")
        ok = True
    finally:
        c.cleanup(ok)


def test_sql_hosts_the_node_while_open():
    c = Cluster(WALRAFT)
    ok = False
    try:
        (port,) = free_ports(1)
        addr = "127.0.0.1:%d" % port
        db = os.path.join(c.root, "solo.db")
        # A write right after raft_bootstrap waits for the node's election instead of failing.
        rc, out, err = run("sql", *FAST, db, "SELECT raft_bootstrap('n1', '%s'); CREATE TABLE "
                           "t0(x); INSERT INTO t0 VALUES (1)" % addr)
        check(rc == 0 and "bootstrapped n1" in out, "bootstrap: %s %r %r" % (rc, out, err))
        # The node restarts in each new walraft sql process, which waits for a leader first.
        rc, out, err = run("sql", *FAST, "--list", db, "CREATE TABLE t(x); INSERT INTO t "
                           "VALUES (7); SELECT raft_role(), x FROM t")
        check(rc == 0 and out == "leader|7\n", "write after restart: %s %r %r" % (rc, out, err))
        rc, out, err = run("sql", *FAST, db, stdin=".status\n.nodes\n.leader\n.transfer n9\n"
                                                   ".quit\nSELECT 'not reached';\n")
        check("node       n1 at " + addr in out and "members" in out, ".status: %r" % out)
        check("is_leader" in out and "voter" in out, ".nodes: %r" % out)
        check("n1 at " + addr in out, ".leader: %r" % out)
        check("error:" in err and "raft_transfer" in err, ".transfer to a stranger: %r" % err)
        check("not reached" not in out, ".quit stops reading")
        ok = True
    finally:
        c.cleanup(ok)


def test_serve_bootstrap_join_status_restart_and_signals():
    c = Cluster(WALRAFT)
    ok = False
    try:
        p1, p2, p3 = free_ports(3)
        a1, a2, a3 = "127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2, "127.0.0.1:%d" % p3
        db1, db2 = os.path.join(c.root, "n1.db"), os.path.join(c.root, "n2.db")
        rc, _, err = run("serve", db1, "--id", "n1", "--listen", a1)
        check(rc == 2 and "--bootstrap" in err, "serve without a node or a mode: %s %r" % (rc, err))
        rc, _, err = run("serve", db1, "--id", "n1", "--listen", a1, "--bootstrap", "--join", a2)
        check(rc == 2, "--bootstrap with --join: %s %r" % (rc, err))
        rc, _, err = run("status", "--timeout-ms", "500", a1)
        check(rc == 1 and err, "status of nobody: %s %r" % (rc, err))

        s1 = Serve(c, "n1", db1, "--id", "n1", "--listen", a1, "--bootstrap", *FAST)
        wait_for("n1 to lead", lambda: (status(a1) or {}).get("state") == "leader", 30)
        s2 = Serve(c, "n2", db2, "--id", "n2", "--listen", a2, "--join", a1, *FAST)
        wait_for("n2 to follow n1", lambda: (status(a2) or {}).get("role") == "voter" and
                 status(a2).get("leader") == "n1", 30)
        s3 = Serve(c, "n3", os.path.join(c.root, "n3.db"), "--id", "n3", "--listen", a3,
                   "--join", a2, "--replica", *FAST)
        # A joined node learns its role when the configuration entry reaches it.
        wait_for("n3 to follow n1 as a replica", lambda: (status(a3) or {}).get("role") ==
                 "replica" and status(a3).get("leader") == "n1", 30)
        st = status(a1)
        check(sorted((n["id"], n["role"]) for n in st["nodes"]) ==
              [("n1", "voter"), ("n2", "voter"), ("n3", "replica")], "members: %s" % st["nodes"])
        rc, out, _ = run("status", "--pretty", a2)
        check(rc == 0 and "node       n2 at " + a2 in out and "leader     n1 at " + a1 in out,
              "pretty status: %r" % out)

        # Another process can read the served database, and cannot write it.
        rc, out, err = run("sql", db1, "SELECT count(*) FROM sqlite_schema")
        check(rc == 0, "read beside serve: %r" % err)
        rc, out, err = run("sql", db1, "CREATE TABLE t(x)")
        check(rc == 1 and "locked" in err, "write beside serve: %s %r" % (rc, err))

        # Clean shutdown, restart without flags, shutdown with SIGINT.
        s2.stop(signal.SIGTERM)
        check("stopped" in s2.text() and "leader n1 at" in s2.text(), "serve log: %r" % s2.text())
        s2 = Serve(c, "n2", db2, *FAST)
        wait_for("n2 back", lambda: (status(a2) or {}).get("leader") == "n1", 30)
        check(status(a2)["id"] == "n2", "restarted with its stored id")
        s2.stop(signal.SIGINT)
        s3.stop(signal.SIGTERM)
        s1.stop(signal.SIGTERM)
        ok = True
    finally:
        c.cleanup(ok)


if __name__ == "__main__":
    if not os.access(WALRAFT, os.X_OK):
        print("missing %s: build it first (make BUILD=%s)" % (WALRAFT, BUILD))
        sys.exit(1)
    sys.exit(run_tests([
        ("usage texts and exit statuses", test_usage_texts_are_there_and_exit_statuses_right),
        ("sql: one statement, scripted input, failures",
         test_sql_one_statement_prints_a_table_and_fails_with_status_1),
        ("sql: the prompt on a terminal", test_sql_prompt_on_a_terminal),
        ("sql hosts the node while open", test_sql_hosts_the_node_while_open),
        ("serve: bootstrap, join, status, restart, signals",
         test_serve_bootstrap_join_status_restart_and_signals),
    ]))
