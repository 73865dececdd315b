#!/usr/bin/python3
"""One walraft node per process through Python's standard sqlite3 module (the way an application
would use the extension), driven by a line protocol on stdin/stdout for the multi-process tests.

    sqlnode.py EXTENSION DB_URI

Each input line is one SQL statement (or script, with a leading '!'); each answer is one line:
    ok <JSON array of rows>
    err <sqlite error code name> <message>
The connection runs in autocommit mode with a 5 s busy timeout. 'quit' closes and exits 0.
"""
import json
import sqlite3
import sys


def main():
    ext, uri = sys.argv[1], sys.argv[2]
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(ext)
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0,
                         check_same_thread=False)
    print("ready", flush=True)
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line == "quit":
            break
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
    db.close()
    print("bye", flush=True)


if __name__ == "__main__":
    main()
