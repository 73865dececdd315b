"""Helpers for multi-process tests on 127.0.0.1: start, drive and kill node processes.

Every process started here is recorded by pid and killed (SIGKILL) by `Cluster.cleanup`, which
the tests call in a `finally`, so a failing test never leaves a node behind.
"""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_ports(n):
    """n distinct TCP ports that were free a moment ago on 127.0.0.1."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Proc:
    """A node process speaking the line protocol of tests/e2e/kvnode.c."""

    def __init__(self, cluster, name, argv, env=None):
        self.cluster = cluster
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(cluster.root, name + ".log")
        self.log = open(self.log_path, "ab")
        e = dict(os.environ)
        e.setdefault("WALRAFT_LOG", "info")
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        if env:
            e.update(env)
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.log, env=e)
        cluster.pids.append(self.p.pid)
        self.buf = b""

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("%s: no answer within %.0fs" % (self.name, timeout))
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    raise Failure("%s: process exited (rc %s); log %s" %
                                  (self.name, self.p.poll(), self.log_path))
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def cmd(self, line, timeout=30):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        return self.readline(timeout)

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
        if sig == signal.SIGKILL:
            self.p.wait(10)

    def quit(self, timeout=30):
        """Clean shutdown; the exit status must be 0 (ASan reports leaks as a failure)."""
        out = self.cmd("quit", timeout)
        rc = self.p.wait(timeout)
        check(rc == 0, "%s: exit status %s after quit (see %s)" % (self.name, rc, self.log_path))
        return out


class Cluster:
    def __init__(self, binary, keep=False):
        self.binary = binary
        self.root = tempfile.mkdtemp(prefix="walraft-e2e-")
        self.pids = []
        self.keep = keep

    def node(self, name, port, *extra, env=None):
        timing = [a for flag, v in (("--election-ms", "500"), ("--heartbeat-ms", "50"))
                  if flag not in extra for a in (flag, v)]
        argv = [self.binary, "--dir", os.path.join(self.root, name), "--name", name,
                "--listen", "127.0.0.1:%d" % port] + timing + list(extra)
        p = Proc(self, name, argv, env)
        ready = p.readline(60)
        check(ready == "ready", "%s did not start: %s" % (name, ready))
        return p

    def cleanup(self, ok):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if ok and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            print("  logs kept in", self.root)


def wait_for(what, fn, timeout=30, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise Failure("timed out waiting for %s (last: %r)" % (what, last))


def leader_of(nodes):
    for n in nodes:
        if n.p.poll() is None and n.cmd("role") == "leader":
            return n
    return None


def status(node):
    return json.loads(node.cmd("status"))


def run_tests(tests):
    """Runs (name, fn) pairs; prints one line each and the summary line; exit status."""
    passed = failed = 0
    for name, fn in tests:
        start = time.monotonic()
        try:
            fn()
            passed += 1
            print("[ ok ] %s (%.1fs)" % (name, time.monotonic() - start), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print("[FAIL] %s: %s: %s" % (name, type(e).__name__, e), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1
