#!/usr/bin/python3
"""One walraft node per process through Python's standard sqlite3 module (the way an application
would use the extension), driven by a line protocol on stdin/stdout for the multi-process tests.

    sqlnode.py EXTENSION DB_URI

Each input line is one SQL statement (or script, with a leading '!'); each answer is one line:
    ok <JSON array of rows>
    err <sqlite error code name> <message>
The connection runs in autocommit mode with a 5 s busy timeout. 'quit' closes and exits 0.

Other commands:
    @parallel THREADS COUNT SQL   run SQL COUNT times on each of THREADS threads, each with its
                                  own connection; answers "ok {error name: count, "ok": n}"
    @reader SQL                   on a second connection: BEGIN, run SQL, keep the transaction
                                  open; "@reader SQL" again runs SQL inside it; "@reader end"
                                  commits it
"""
import ctypes
import json
import sqlite3
import sys
import threading


SQLITE_CONFIG_LOG = 16
_log_hook = None


def log_sqlite_errors():
    """SQLite's own error log (sqlite3_log: the source line of a corruption check, a recovery,
    the VFS's refusals) goes to stderr, which is the node's log. Set before the library is
    initialised: SQLite 3.40 takes the option at no other time."""
    global _log_hook
    lib = ctypes.CDLL("libsqlite3.so.0")
    proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)

    def hook(_arg, code, msg):
        sys.stderr.write("sqlite log (%d): %s\n" % (code, msg.decode("utf-8", "replace")))
        sys.stderr.flush()

    _log_hook = proto(hook)
    lib.sqlite3_shutdown()
    if lib.sqlite3_config(SQLITE_CONFIG_LOG, _log_hook, None) != 0:
        sys.stderr.write("sqlnode: SQLite's error log is not available\n")


def main():
    ext, uri = sys.argv[1], sys.argv[2]
    log_sqlite_errors()
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(ext)
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0,
                         check_same_thread=False)
    print("ready", flush=True)
    reader = None
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line == "quit":
            break
        if line.startswith("@parallel "):
            _, threads, count, sql = line.split(" ", 3)
            print("ok " + json.dumps(parallel(uri, int(threads), int(count), sql)), flush=True)
            continue
        if line.startswith("@reader "):
            sql = line[len("@reader "):]
            try:
                if reader is None:
                    reader = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
                    reader.execute("BEGIN")
                if sql == "end":
                    reader.execute("COMMIT")
                    reader.close()
                    reader = None
                    rows = []
                else:
                    rows = [list(r) for r in reader.execute(sql).fetchall()]
                print("ok " + json.dumps(rows), flush=True)
            except sqlite3.Error as e:
                print("err %s %s" % (getattr(e, "sqlite_errorname", "error"), e), flush=True)
            continue
        try:
            if line.startswith("!"):
                db.executescript(line[1:])
                rows = []
            else:
                rows = [list(r) for r in db.execute(line).fetchall()]
            print("ok " + json.dumps(rows), flush=True)
        except sqlite3.Error as e:
            name = getattr(e, "sqlite_errorname", type(e).__name__)
            print("err %s %s" % (name, str(e).replace("\n", " ")), flush=True)
    # Stop the node cleanly (the extension stays loaded; its library is already in the process).
    ctypes.CDLL(ext).walraft_shutdown()
    if reader is not None:
        reader.close()
    db.close()
    print("bye", flush=True)


def parallel(uri, threads, count, sql):
    results = {"ok": 0}
    lock = threading.Lock()

    def work():
        c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0,
                            check_same_thread=False)
        for _ in range(count):
            try:
                c.execute(sql)
                key = "ok"
            except sqlite3.Error as e:
                key = getattr(e, "sqlite_errorname", type(e).__name__)
            with lock:
                results[key] = results.get(key, 0) + 1
        c.close()

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


if __name__ == "__main__":
    main()
