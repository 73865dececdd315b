/*
 * walraft serve: runs the node of one database in the foreground. The node lives in this
 * process (the extension starts it on raft_bootstrap / raft_join, or restarts it when the
 * database is opened and its -raft/ directory exists); this file only opens the database, starts
 * the node when asked, reports role, term, leader and commit changes, and on SIGINT or SIGTERM
 * stops the node with walraft_shutdown() before closing the connection.
 *
 * SIGINT and SIGTERM are blocked before the extension starts any thread, so every thread
 * inherits the mask and the signals are taken only by the sigtimedwait of the main loop.
 */
#include "shell/shell.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ext/walraft.h"

#define POLL_MS 200
#define COMMIT_LOG_EVERY_MS 2000

struct view {
    char state[16];
    char role[16];
    long long term;
    char leader[64];
    char leader_addr[80];
    long long commit;
    long long applied;
    int members;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void copy(char *dst, size_t cap, const unsigned char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? (const char *)src : "");
}

/* This node's view, from raft_status(). Returns 0, or 1 with the error in why. */
static int read_view(sqlite3 *db, struct view *v, char *why, size_t why_len)
{
    static const char *q = "SELECT j->>'$.state', j->>'$.role', j->>'$.term', j->>'$.leader',"
                           " j->>'$.leader_address', j->>'$.commit_index', j->>'$.applied_index',"
                           " json_array_length(j, '$.nodes') FROM (SELECT raft_status() AS j)";
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, q, -1, &stmt, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        copy(v->state, sizeof v->state, sqlite3_column_text(stmt, 0));
        copy(v->role, sizeof v->role, sqlite3_column_text(stmt, 1));
        v->term = sqlite3_column_int64(stmt, 2);
        copy(v->leader, sizeof v->leader, sqlite3_column_text(stmt, 3));
        copy(v->leader_addr, sizeof v->leader_addr, sqlite3_column_text(stmt, 4));
        v->commit = sqlite3_column_int64(stmt, 5);
        v->applied = sqlite3_column_int64(stmt, 6);
        v->members = sqlite3_column_int(stmt, 7);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        snprintf(why, why_len, "%s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : 1;
}

static void log_view(const char *who, const struct view *v)
{
    char leader[160];
    if (v->leader[0] != '\0') {
        snprintf(leader, sizeof leader, "%s at %s", v->leader, v->leader_addr);
    } else {
        snprintf(leader, sizeof leader, "none known");
    }
    shell_log("INFO", who, "%s%s%s%s, term %lld, leader %s, %d member%s, commit %lld, applied %lld",
              v->state, strcmp(v->role, "voter") != 0 ? " (" : "",
              strcmp(v->role, "voter") != 0 ? v->role : "",
              strcmp(v->role, "voter") != 0 ? ")" : "", v->term, leader, v->members,
              v->members == 1 ? "" : "s", v->commit, v->applied);
}

/* Runs `sql` with text parameters and prints its one-value result as a log line. */
static int start_node(sqlite3 *db, const char *sql, const char *a, const char *b, const char *c)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    const char *args[] = {a, b, c};
    for (int i = 0; rc == SQLITE_OK && i < 3 && args[i] != NULL; i++) {
        rc = sqlite3_bind_text(stmt, i + 1, args[i], -1, SQLITE_STATIC);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
    }
    if (rc == SQLITE_ROW) {
        shell_log("INFO", "serve", "%s", (const char *)sqlite3_column_text(stmt, 0));
        rc = SQLITE_OK;
    } else {
        fprintf(stderr, "walraft serve: the node did not start: %s\n", sqlite3_errmsg(db));
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : 1;
}

static bool dir_exists(const char *db)
{
    char path[4200];
    struct stat st;
    const char *p = db;
    size_t n = strlen(db);
    if (strncmp(db, "file:", 5) == 0) {
        /* A URI: its path part, without escapes (good enough for the check; the extension
         * decides for real). */
        p = db + 5;
        n = strcspn(p, "?#");
    }
    snprintf(path, sizeof path, "%.*s-raft", (int)n, p);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int shell_cmd_serve(int argc, char **argv)
{
    struct shell_db_arg dba = {0};
    const char *id = NULL, *listen = NULL, *join = NULL;
    bool bootstrap = false, replica = false;

    for (int i = 1; i < argc; i++) {
        int k = shell_param_arg(argc, argv, &i, &dba);
        if (k < 0) {
            return 2;
        }
        if (k > 0) {
            continue;
        }
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return shell_help("serve", stdout);
        } else if (strcmp(a, "--id") == 0 && has_value) {
            id = argv[++i];
        } else if (strcmp(a, "--listen") == 0 && has_value) {
            listen = argv[++i];
        } else if (strcmp(a, "--join") == 0 && has_value) {
            join = argv[++i];
        } else if (strcmp(a, "--bootstrap") == 0) {
            bootstrap = true;
        } else if (strcmp(a, "--replica") == 0) {
            replica = true;
        } else if (a[0] == '-' || dba.db != NULL) {
            fprintf(stderr, "walraft serve: unexpected argument '%s'%s (see walraft help serve)\n",
                    a, a[0] == '-' && !has_value ? " or missing value" : "");
            return 2;
        } else {
            dba.db = a;
        }
    }
    if (dba.db == NULL) {
        fprintf(stderr, "walraft serve: which database? walraft serve DB --id ID --listen "
                        "HOST:PORT --bootstrap\n");
        return 2;
    }
    if (bootstrap && join != NULL) {
        fprintf(stderr, "walraft serve: --bootstrap and --join exclude each other\n");
        return 2;
    }
    if (replica && join == NULL) {
        fprintf(stderr, "walraft serve: --replica goes with --join\n");
        return 2;
    }
    bool restart = dir_exists(dba.db);
    if (!restart && !bootstrap && join == NULL) {
        fprintf(stderr,
                "walraft serve: %s has no node yet (no %s-raft/ directory): start a new "
                "cluster with --bootstrap or join one with --join PEER\n",
                dba.db, dba.db);
        return 2;
    }
    if (!restart && (id == NULL || listen == NULL)) {
        fprintf(stderr, "walraft serve: a new node needs --id ID and --listen HOST:PORT\n");
        return 2;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    setenv("WALRAFT_LOG", "info", 0);

    if (shell_init() != 0) {
        return 1;
    }
    sqlite3 *db = NULL;
    if (shell_open(&dba, &db) != 0) {
        return 1;
    }
    int rc = 0;
    struct view v;
    memset(&v, 0, sizeof v);
    char why[512];
    if (restart) {
        if (bootstrap || join != NULL) {
            shell_log("INFO", "serve",
                      "%s-raft/ exists: restarting its node (--bootstrap and "
                      "--join ignored)",
                      dba.db);
        }
    } else if (bootstrap) {
        rc = start_node(db, "SELECT raft_bootstrap(?1, ?2)", id, listen, NULL);
    } else {
        rc = start_node(db,
                        replica ? "SELECT raft_join(?1, ?2, ?3, 'replica')"
                                : "SELECT raft_join(?1, ?2, ?3)",
                        id, listen, join);
    }
    if (rc == 0 && read_view(db, &v, why, sizeof why) != 0) {
        fprintf(stderr, "walraft serve: no node runs for %s: %s\n", dba.db, why);
        rc = 1;
    }
    if (rc != 0) {
        walraft_shutdown();
        sqlite3_close(db);
        return 1;
    }
    char *self = shell_value(db,
                             "SELECT raft_status()->>'$.id' || ' at ' || "
                             "(raft_status()->>'$.address')",
                             NULL, NULL);
    shell_log("INFO", "serve", "serving %s as %s; stop with SIGINT or SIGTERM", dba.db,
              self != NULL ? self : "?");
    if (restart && self != NULL && id != NULL && strncmp(self, id, strlen(id)) != 0) {
        shell_log("WARN", "serve", "--id %s differs from the id in %s-raft/; the stored one counts",
                  id, dba.db);
    }
    sqlite3_free(self);
    log_view("serve", &v);

    struct view last = v;
    long long last_commit_log = now_ms();
    int sig = 0;
    bool failing = false;
    for (;;) {
        struct timespec wait = {.tv_sec = 0, .tv_nsec = POLL_MS * 1000000L};
        sig = sigtimedwait(&sigs, NULL, &wait);
        if (sig == SIGINT || sig == SIGTERM) {
            break;
        }
        if (read_view(db, &v, why, sizeof why) != 0) {
            if (!failing) {
                shell_log("WARN", "serve", "cannot read the node's status: %s", why);
            }
            failing = true;
            continue;
        }
        failing = false;
        bool changed = strcmp(v.state, last.state) != 0 || strcmp(v.role, last.role) != 0 ||
                       v.term != last.term || strcmp(v.leader, last.leader) != 0 ||
                       v.members != last.members;
        bool commit_moved = v.commit != last.commit;
        if (changed || (commit_moved && now_ms() - last_commit_log >= COMMIT_LOG_EVERY_MS)) {
            log_view("serve", &v);
            last = v;
            last_commit_log = now_ms();
        }
    }
    shell_log("INFO", "serve", "%s: stopping the node", sig == SIGINT ? "SIGINT" : "SIGTERM");
    walraft_shutdown();
    rc = sqlite3_close(db);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "walraft serve: closing the database: %s\n", sqlite3_errstr(rc));
        return 1;
    }
    shell_log("INFO", "serve", "stopped");
    return 0;
}
