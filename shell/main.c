/*
 * walraft — the command-line program: `serve` runs a node for a database in the foreground,
 * `sql` opens an SQL prompt on a replicated database, `status` asks a running node for its
 * status over the network. This file dispatches the subcommands and holds every usage text, so
 * the help stays in one place and matches what the code accepts.
 */
#include "shell/shell.h"

#include <stdlib.h>
#include <string.h>

#include "ext/walraft.h"

static const char usage_main[] =
    "NAME\n"
    "    walraft - run and use replicated SQLite databases\n"
    "\n"
    "SYNOPSIS\n"
    "    walraft serve DB [--id ID --listen HOST:PORT] [--bootstrap | --join PEER [--replica]]\n"
    "                     [-p NAME=VALUE]...\n"
    "    walraft sql [--list] [--no-header] [-p NAME=VALUE]... DB [SQL]\n"
    "    walraft status [--pretty] [--timeout-ms N] ADDR\n"
    "    walraft help [COMMAND]\n"
    "    walraft --help | --version\n"
    "\n"
    "DESCRIPTION\n"
    "    A walraft database is an ordinary SQLite file whose writes are replicated with Raft to\n"
    "    the other members of its cluster. Each member runs a node inside the process that opens\n"
    "    the database; the node's state lives beside the database in DB-raft/.\n"
    "\n"
    "    serve    run a node for DB in the foreground until SIGINT or SIGTERM\n"
    "    sql      an SQL prompt (or one statement) on DB; the node runs in this process\n"
    "    status   print the status of the node listening at ADDR, as JSON\n"
    "    help     the usage of one command: walraft help serve\n"
    "\n"
    "    Only the process that runs a database's node can write it. Any other process, walraft\n"
    "    or plain sqlite3, can read it.\n"
    "\n"
    "ENVIRONMENT\n"
    "    WALRAFT_LOG   log level on stderr: error, warn (default), info, debug\n"
    "\n"
    "EXIT STATUS\n"
    "    0 on success, 1 when an operation failed, 2 on a usage error.\n";

static const char usage_serve[] =
    "NAME\n"
    "    walraft serve - run the node of a replicated database in the foreground\n"
    "\n"
    "SYNOPSIS\n"
    "    walraft serve DB --id ID --listen HOST:PORT --bootstrap\n"
    "    walraft serve DB --id ID --listen HOST:PORT --join PEER [--replica]\n"
    "    walraft serve DB\n"
    "\n"
    "DESCRIPTION\n"
    "    Opens DB (a path, or a file: URI) with the walraft VFS and runs its node until SIGINT or\n"
    "    SIGTERM, then stops the node cleanly and exits 0.\n"
    "\n"
    "    With --bootstrap, a new one-node cluster starts on DB (raft_bootstrap). With --join, the\n"
    "    node asks the cluster member at PEER to add it (raft_join); it joins as a voter, or as a\n"
    "    read replica with --replica. When DB-raft/ already exists the node restarts from it and\n"
    "    --bootstrap and --join are ignored; ID and HOST:PORT are then taken from DB-raft/ and\n"
    "    may be left out.\n"
    "\n"
    "    The process logs to stderr: the runtime's records (WALRAFT_LOG=info is the default here)\n"
    "    and a line whenever the role, term or leader changes, and the commit index every few\n"
    "    seconds while it moves.\n"
    "\n"
    "    While serve runs, it is the only process that can write DB; other processes can read it\n"
    "    with sqlite3 or walraft sql.\n"
    "\n"
    "OPTIONS\n"
    "    --id ID              this node's id: 1-31 letters, digits, '-', '_' or '.'\n"
    "    --listen HOST:PORT   the address the node listens on and other members dial\n"
    "    --bootstrap          start a new cluster with this node as its only member\n"
    "    --join PEER          join the cluster through the member at PEER (HOST:PORT)\n"
    "    --replica            with --join: join as a non-voting read replica\n"
    "    -p, --param NAME=VALUE\n"
    "                         a URI parameter for DB, e.g. raft_election_timeout_ms=500,\n"
    "                         raft_heartbeat_ms=50, raft_commit_timeout_ms, "
    "raft_checkpoint_frames,\n"
    "                         raft_trailing_entries, raft_trailing_bytes,\n"
    "                         raft_max_txn_bytes, raft_leader_sync=eager|lazy\n"
    "\n"
    "EXAMPLES\n"
    "    walraft serve app.db --id n1 --listen 127.0.0.1:7001 --bootstrap\n"
    "    walraft serve app.db --id n2 --listen 127.0.0.1:7002 --join 127.0.0.1:7001\n"
    "\n"
    "EXIT STATUS\n"
    "    0 after a clean shutdown, 1 when the node cannot start, 2 on a usage error.\n";

static const char usage_sql[] =
    "NAME\n"
    "    walraft sql - an SQL prompt on a replicated database\n"
    "\n"
    "SYNOPSIS\n"
    "    walraft sql [--list] [--no-header] [-p NAME=VALUE]... DB [SQL]\n"
    "\n"
    "DESCRIPTION\n"
    "    Opens DB (a path, or a file: URI) with the walraft VFS. If DB-raft/ exists, the node of\n"
    "    DB restarts in this process and runs while the prompt is open; if another process runs\n"
    "    it already, DB is open for reading only. SELECT raft_bootstrap(...) or raft_join(...)\n"
    "    at the prompt starts a new node here. Whenever the node starts here (on open, or by\n"
    "    raft_bootstrap or raft_join), the next statement waits up to 5 s for the node to\n"
    "    learn who leads: a node that just started knows no leader yet and would refuse writes.\n"
    "\n"
    "    With SQL, runs its statements in order, prints their rows and exits; it stops at the\n"
    "    first statement that fails, with exit status 1. Without SQL, reads statements from\n"
    "    standard input: on a terminal a prompt, with line editing and history\n"
    "    (~/.walraft_history) when built with readline or libedit (see walraft --version);\n"
    "    otherwise one statement after another without a prompt (a failed statement is\n"
    "    reported and the next one runs; the exit status is 1 if any failed).\n"
    "\n"
    "    Writes succeed only on the leader; elsewhere they fail with SQLITE_READONLY and a "
    "message\n"
    "    naming the leader. SELECT raft_barrier() before a read makes the read see every write\n"
    "    committed before it.\n"
    "\n"
    "    Rows print as aligned columns under a header; NULL prints as NULL. Errors go to stderr\n"
    "    as \"error: MESSAGE (SQLITE_CODE)\".\n"
    "\n"
    "OPTIONS\n"
    "    --list               print rows as a|b|c lines without a header\n"
    "    --no-header          aligned columns without the header lines\n"
    "    -p, --param NAME=VALUE\n"
    "                         a URI parameter for DB (see walraft help serve)\n"
    "\n"
    "DOT-COMMANDS\n"
    "    .status              this node's status, readable\n"
    "    .nodes               the members (the raft_nodes table)\n"
    "    .leader              who leads, and where\n"
    "    .transfer [ID]       hand leadership to ID, or to the most up-to-date voter\n"
    "    .tables              the tables of the database\n"
    "    .mode list|columns   rows as a|b|c lines, or as aligned columns (the default)\n"
    "    .headers on|off      the header lines of aligned columns\n"
    "    .print TEXT          print TEXT (for scripts that wait for their output)\n"
    "    .help                this list\n"
    "    .quit, .exit         leave (the node of this process stops)\n"
    "\n"
    "EXAMPLES\n"
    "    walraft sql app.db \"SELECT raft_bootstrap('n1', '127.0.0.1:7001')\"\n"
    "    walraft sql app.db \"CREATE TABLE t(x); INSERT INTO t VALUES (1)\"\n"
    "    walraft sql replica.db \"SELECT raft_barrier(); SELECT * FROM t\"\n";

static const char usage_status[] =
    "NAME\n"
    "    walraft status - ask a running node for its status\n"
    "\n"
    "SYNOPSIS\n"
    "    walraft status [--pretty] [--timeout-ms N] ADDR\n"
    "\n"
    "DESCRIPTION\n"
    "    Connects to the node listening at ADDR (HOST:PORT) and prints its status: the JSON of\n"
    "    raft_status() (id, address, state, role, term, leader, log indexes, counters, and one\n"
    "    object per member with its match index, lag and last contact). Needs no database and\n"
    "    no cluster membership.\n"
    "\n"
    "OPTIONS\n"
    "    --pretty             print a readable summary and a table of members instead of JSON\n"
    "    --timeout-ms N       give up after N milliseconds (default 5000)\n"
    "\n"
    "EXIT STATUS\n"
    "    0 when the node answered, 1 when it did not (the reason is printed on stderr).\n";

int shell_help(const char *topic, FILE *out)
{
    if (topic == NULL) {
        fputs(usage_main, out);
    } else if (strcmp(topic, "serve") == 0) {
        fputs(usage_serve, out);
    } else if (strcmp(topic, "sql") == 0) {
        fputs(usage_sql, out);
    } else if (strcmp(topic, "status") == 0) {
        fputs(usage_status, out);
    } else if (strcmp(topic, "help") == 0) {
        fputs(usage_main, out);
    } else {
        fprintf(stderr, "walraft: no command '%s'; the commands are serve, sql, status, help\n",
                topic);
        return 2;
    }
    return 0;
}

int shell_cmd_status(int argc, char **argv)
{
    const char *addr = NULL;
    bool pretty = false;
    long timeout_ms = 5000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            return shell_help("status", stdout);
        } else if (strcmp(argv[i], "--pretty") == 0) {
            pretty = true;
        } else if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc) {
            char *end;
            timeout_ms = strtol(argv[++i], &end, 10);
            if (*end != '\0' || timeout_ms <= 0 || timeout_ms > 3600000) {
                fprintf(stderr, "walraft status: --timeout-ms takes 1..3600000\n");
                return 2;
            }
        } else if (argv[i][0] == '-' || addr != NULL) {
            fprintf(stderr, "walraft status: unexpected argument '%s' (see walraft help status)\n",
                    argv[i]);
            return 2;
        } else {
            addr = argv[i];
        }
    }
    if (addr == NULL) {
        fprintf(stderr, "walraft status: which node? give its address: walraft status "
                        "127.0.0.1:7001\n");
        return 2;
    }
    char *json = NULL;
    char err[512] = "";
    if (walraft_remote_status(addr, (int)timeout_ms, &json, err, sizeof err) != 0) {
        fprintf(stderr, "walraft status: %s: %s\n", addr, err[0] ? err : "no answer");
        return 1;
    }
    int rc = 0;
    if (pretty) {
        sqlite3 *db = NULL;
        if (sqlite3_open(":memory:", &db) != SQLITE_OK) {
            fprintf(stderr, "walraft status: cannot open an in-memory database\n");
            rc = 1;
        } else {
            rc = shell_status_pretty(db, json, stdout);
        }
        sqlite3_close(db);
    } else {
        printf("%s\n", json);
    }
    free(json);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_main, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        return shell_help(NULL, stdout);
    }
    if (strcmp(cmd, "--version") == 0) {
#if defined(WALRAFT_READLINE)
        const char *editing = "readline";
#elif defined(WALRAFT_EDITLINE)
        const char *editing = "libedit";
#else
        const char *editing = "none";
#endif
        printf("walraft (SQLite %s, line editing: %s)\n", sqlite3_libversion(), editing);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        return shell_help(argc > 2 ? argv[2] : NULL, stdout);
    }
    if (strcmp(cmd, "serve") == 0) {
        return shell_cmd_serve(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "sql") == 0) {
        return shell_cmd_sql(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "status") == 0) {
        return shell_cmd_status(argc - 1, argv + 1);
    }
    fprintf(stderr,
            "walraft: no command '%s'; the commands are serve, sql, status, help "
            "(walraft --help)\n",
            cmd);
    return 2;
}
