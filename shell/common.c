/*
 * What the subcommands share: start-up (the extension and SQLite's log), opening a database with
 * the walraft VFS, printing result rows as aligned columns, and the readable form of a node's
 * status JSON (taken apart with SQLite's own JSON functions, so the program needs no parser).
 */
#include "shell/shell.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ext/walraft.h"

#define ROWS_MAX 1000000 /* a bound on what a table buffers to size its columns */

void shell_log(const char *level, const char *who, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld walraft %s [%s] ", tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level, who);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

/* SQLite's log carries the extension's own explanations. While this thread runs a statement
 * they are kept (the last one wins) and printed with the statement's error, if it fails: SQLite's
 * own message for a refused write is only "attempt to write a readonly database", the log line
 * names the leader. A write that waits out a busy leader logs at each retry; those lines vanish
 * when the write succeeds. Other threads' lines (the node's) reach stderr at once; the rest of
 * SQLite's chatter only with WALRAFT_LOG=debug. */
static _Thread_local bool capturing;
static _Thread_local char captured[1024];

static void sqlite_log(void *arg, int code, const char *msg)
{
    bool debug = arg != NULL;
    bool ours = strncmp(msg, "walraft", 7) == 0;
    if (ours && capturing) {
        snprintf(captured, sizeof captured, "%s", msg);
        if (!debug) {
            return;
        }
    }
    if (debug || ours) {
        shell_log((code & 0xff) == SQLITE_WARNING  ? "WARN"
                  : (code & 0xff) == SQLITE_NOTICE ? "INFO"
                                                   : "ERROR",
                  "sqlite", "%s (%s)", msg, shell_code_name(code));
    }
}

static void capture_begin(void)
{
    capturing = true;
    captured[0] = '\0';
}

static void capture_end(void)
{
    capturing = false;
}

int shell_init(void)
{
    const char *lvl = getenv("WALRAFT_LOG");
    static int debug_tag = 1;
    sqlite3_config(SQLITE_CONFIG_LOG, sqlite_log,
                   lvl != NULL && strcmp(lvl, "debug") == 0 ? &debug_tag : NULL);
    sqlite3_config(SQLITE_CONFIG_URI, 1);
    char *err = NULL;
    int rc = sqlite3_walraft_init(NULL, &err, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_OK_LOAD_PERMANENTLY) {
        fprintf(stderr, "walraft: cannot initialise: %s\n", err != NULL ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        return 1;
    }
    sqlite3_free(err);
    return 0;
}

int shell_param_arg(int argc, char **argv, int *i, struct shell_db_arg *a)
{
    const char *v = NULL;
    if (strcmp(argv[*i], "-p") == 0 || strcmp(argv[*i], "--param") == 0) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "walraft: %s needs NAME=VALUE\n", argv[*i]);
            return -1;
        }
        v = argv[++*i];
    } else if (strncmp(argv[*i], "--param=", 8) == 0) {
        v = argv[*i] + 8;
    } else {
        return 0;
    }
    if (strchr(v, '=') == NULL || v[0] == '=' || strpbrk(v, "&#?") != NULL) {
        fprintf(stderr, "walraft: a URI parameter looks like NAME=VALUE (got '%s')\n", v);
        return -1;
    }
    if (a->n_params == SHELL_PARAMS_MAX) {
        fprintf(stderr, "walraft: at most %d URI parameters\n", SHELL_PARAMS_MAX);
        return -1;
    }
    a->params[a->n_params++] = v;
    return 1;
}

int shell_open(const struct shell_db_arg *a, sqlite3 **db)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    bool is_uri = strncmp(a->db, "file:", 5) == 0;
    char sep = '?';
    if (is_uri) {
        sqlite3_str_appendall(s, a->db);
        sep = strchr(a->db, '?') != NULL ? '&' : '?';
        if (strstr(a->db, "vfs=") == NULL) {
            sqlite3_str_appendf(s, "%cvfs=walraft", sep);
            sep = '&';
        }
    } else {
        sqlite3_str_appendall(s, "file:");
        for (const char *p = a->db; *p; p++) {
            if (*p == '?' || *p == '#' || *p == '%') {
                sqlite3_str_appendf(s, "%%%02X", (unsigned char)*p);
            } else {
                sqlite3_str_appendchar(s, 1, *p);
            }
        }
        sqlite3_str_appendall(s, "?vfs=walraft");
        sep = '&';
    }
    for (int i = 0; i < a->n_params; i++) {
        sqlite3_str_appendf(s, "%c%s", sep, a->params[i]);
        sep = '&';
    }
    char *uri = sqlite3_str_finish(s);
    if (uri == NULL) {
        fprintf(stderr, "walraft: out of memory\n");
        return 1;
    }
    int rc = sqlite3_open_v2(uri, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                             NULL);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "walraft: cannot open %s: %s\n", uri,
                *db != NULL ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        sqlite3_free(uri);
        return 1;
    }
    sqlite3_free(uri);
    sqlite3_busy_timeout(*db, SHELL_BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(*db, 1);
    return 0;
}

const char *shell_code_name(int rc)
{
    static const char *names[] = {
        "SQLITE_OK",       "SQLITE_ERROR",     "SQLITE_INTERNAL", "SQLITE_PERM",
        "SQLITE_ABORT",    "SQLITE_BUSY",      "SQLITE_LOCKED",   "SQLITE_NOMEM",
        "SQLITE_READONLY", "SQLITE_INTERRUPT", "SQLITE_IOERR",    "SQLITE_CORRUPT",
        "SQLITE_NOTFOUND", "SQLITE_FULL",      "SQLITE_CANTOPEN", "SQLITE_PROTOCOL",
        "SQLITE_EMPTY",    "SQLITE_SCHEMA",    "SQLITE_TOOBIG",   "SQLITE_CONSTRAINT",
        "SQLITE_MISMATCH", "SQLITE_MISUSE",    "SQLITE_NOLFS",    "SQLITE_AUTH",
        "SQLITE_FORMAT",   "SQLITE_RANGE",     "SQLITE_NOTADB",   "SQLITE_NOTICE",
        "SQLITE_WARNING",
    };
    int primary = rc & 0xff;
    if (primary >= 0 && primary < (int)(sizeof names / sizeof names[0])) {
        return names[primary];
    }
    return primary == SQLITE_ROW ? "SQLITE_ROW" : primary == SQLITE_DONE ? "SQLITE_DONE" : "?";
}

void shell_print_error(sqlite3 *db, int rc)
{
    bool from_db = db != NULL && sqlite3_errcode(db) != SQLITE_OK;
    int code = from_db ? sqlite3_extended_errcode(db) : rc;
    const char *msg = from_db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    fprintf(stderr, "error: %s (%s", msg, shell_code_name(code));
    if (code != (code & 0xff)) {
        fprintf(stderr, ", extended code %d", code);
    }
    fprintf(stderr, ")\n");
    if (captured[0] != '\0' && strstr(msg, captured) == NULL) {
        fprintf(stderr, "       %s\n", captured);
    } else if ((code & 0xff) == SQLITE_BUSY && strstr(msg, "locked") != NULL) {
        fprintf(stderr, "       (if another process runs this database's node, only that "
                        "process can write it)\n");
    }
    captured[0] = '\0';
}

/* --- tables ----------------------------------------------------------------------------------- */

struct table {
    int ncol;
    char **names;
    bool *numeric; /* every non-NULL value of the column is a number: right-align it */
    int *width;
    char **cells; /* nrow * ncol, NULL for SQL NULL */
    size_t nrow, cap;
};

/* Display width of UTF-8 text: one column per code point. */
static int text_width(const char *s)
{
    int w = 0;
    for (; *s; s++) {
        w += ((unsigned char)*s & 0xC0) != 0x80;
    }
    return w;
}

static char *dup_text(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n + 1);
    }
    return d;
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->nrow * (size_t)t->ncol; i++) {
        free(t->cells[i]);
    }
    for (int c = 0; c < t->ncol; c++) {
        free(t->names[c]);
    }
    free(t->cells);
    free(t->names);
    free(t->numeric);
    free(t->width);
}

static void print_cell(FILE *out, const char *s, int width, bool right, bool last)
{
    int pad = width - text_width(s);
    if (right && pad > 0) {
        fprintf(out, "%*s", pad, "");
    }
    fputs(s, out);
    if (!right && !last && pad > 0) {
        fprintf(out, "%*s", pad, "");
    }
    if (!last) {
        fputs("  ", out);
    }
}

static void table_print(const struct table *t, const struct shell_output *o, FILE *out)
{
    if (o->list) {
        for (size_t r = 0; r < t->nrow; r++) {
            for (int c = 0; c < t->ncol; c++) {
                const char *v = t->cells[r * (size_t)t->ncol + (size_t)c];
                fprintf(out, "%s%s", c > 0 ? "|" : "", v != NULL ? v : "");
            }
            fputc('\n', out);
        }
        return;
    }
    if (o->header) {
        for (int c = 0; c < t->ncol; c++) {
            print_cell(out, t->names[c], t->width[c], false, c == t->ncol - 1);
        }
        fputc('\n', out);
        for (int c = 0; c < t->ncol; c++) {
            for (int k = 0; k < t->width[c]; k++) {
                fputc('-', out);
            }
            fputs(c == t->ncol - 1 ? "\n" : "  ", out);
        }
    }
    for (size_t r = 0; r < t->nrow; r++) {
        for (int c = 0; c < t->ncol; c++) {
            const char *v = t->cells[r * (size_t)t->ncol + (size_t)c];
            print_cell(out, v != NULL ? v : "NULL", t->width[c], t->numeric[c], c == t->ncol - 1);
        }
        fputc('\n', out);
    }
}

/* Steps `stmt` to the end, printing its rows. Returns the final step code. */
static int run_stmt(sqlite3_stmt *stmt, const struct shell_output *o, FILE *out)
{
    struct table t = {0};
    int rc;
    t.ncol = sqlite3_column_count(stmt);
    if (t.ncol == 0) {
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        }
        return rc;
    }
    t.names = calloc((size_t)t.ncol, sizeof *t.names);
    t.numeric = calloc((size_t)t.ncol, sizeof *t.numeric);
    t.width = calloc((size_t)t.ncol, sizeof *t.width);
    if (t.names == NULL || t.numeric == NULL || t.width == NULL) {
        table_free(&t);
        return SQLITE_NOMEM;
    }
    for (int c = 0; c < t.ncol; c++) {
        const char *name = sqlite3_column_name(stmt, c);
        t.names[c] = dup_text(name != NULL ? name : "?");
        if (t.names[c] == NULL) {
            table_free(&t);
            return SQLITE_NOMEM;
        }
        t.width[c] = text_width(t.names[c]);
        t.numeric[c] = true;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (t.nrow == t.cap && t.nrow >= ROWS_MAX) {
            /* Too many rows to size the columns on all of them: print these, go on. */
            table_print(&t, o, out);
            for (size_t i = 0; i < t.nrow * (size_t)t.ncol; i++) {
                free(t.cells[i]);
            }
            t.nrow = 0;
        }
        if (t.nrow == t.cap) {
            size_t cap = t.cap == 0 ? 64 : t.cap * 2;
            char **cells = realloc(t.cells, cap * (size_t)t.ncol * sizeof *cells);
            if (cells == NULL) {
                rc = SQLITE_NOMEM;
                break;
            }
            t.cells = cells;
            t.cap = cap;
        }
        for (int c = 0; c < t.ncol; c++) {
            int type = sqlite3_column_type(stmt, c);
            char *v = NULL;
            if (type == SQLITE_BLOB) {
                int n = sqlite3_column_bytes(stmt, c);
                v = malloc((size_t)n * 2 + 4);
                if (v != NULL) {
                    const unsigned char *b = sqlite3_column_blob(stmt, c);
                    int k = sprintf(v, "x'");
                    for (int i = 0; i < n; i++) {
                        k += sprintf(v + k, "%02x", b[i]);
                    }
                    sprintf(v + k, "'");
                }
            } else if (type != SQLITE_NULL) {
                const unsigned char *s = sqlite3_column_text(stmt, c);
                v = dup_text(s != NULL ? (const char *)s : "");
            }
            if (type != SQLITE_NULL && type != SQLITE_INTEGER && type != SQLITE_FLOAT) {
                t.numeric[c] = false;
            }
            int w = v != NULL ? text_width(v) : 4;
            if (w > t.width[c]) {
                t.width[c] = w;
            }
            t.cells[t.nrow * (size_t)t.ncol + (size_t)c] = v;
        }
        t.nrow++;
    }
    if (rc == SQLITE_DONE) {
        table_print(&t, o, out);
    }
    table_free(&t);
    return rc;
}

void (*shell_after_statement)(sqlite3 *db);

int shell_exec(sqlite3 *db, const char *sql, const struct shell_output *o, FILE *out)
{
    const char *tail = sql;
    while (tail != NULL && *tail != '\0') {
        sqlite3_stmt *stmt = NULL;
        captured[0] = '\0';
        int rc = sqlite3_prepare_v2(db, tail, -1, &stmt, &tail);
        if (rc != SQLITE_OK) {
            shell_print_error(db, rc);
            return 1;
        }
        if (stmt == NULL) {
            continue; /* whitespace or a comment */
        }
        capture_begin();
        rc = run_stmt(stmt, o, out);
        capture_end();
        if (rc != SQLITE_DONE) {
            shell_print_error(db, rc);
            sqlite3_finalize(stmt);
            return 1;
        }
        sqlite3_finalize(stmt);
        fflush(out);
        if (shell_after_statement != NULL) {
            shell_after_statement(db);
        }
    }
    return 0;
}

int shell_query(sqlite3 *db, const char *sql, const char *arg1, const struct shell_output *o,
                FILE *out)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK && arg1 != NULL) {
        rc = sqlite3_bind_text(stmt, 1, arg1, -1, SQLITE_TRANSIENT);
    }
    if (rc == SQLITE_OK) {
        capture_begin();
        rc = run_stmt(stmt, o, out);
        capture_end();
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        shell_print_error(db, rc);
        return 1;
    }
    return 0;
}

char *shell_value(sqlite3 *db, const char *sql, const char *arg1, char **err)
{
    sqlite3_stmt *stmt = NULL;
    char *v = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK && arg1 != NULL) {
        rc = sqlite3_bind_text(stmt, 1, arg1, -1, SQLITE_TRANSIENT);
    }
    if (rc == SQLITE_OK) {
        capture_begin();
        rc = sqlite3_step(stmt);
        capture_end();
        if (rc == SQLITE_ROW) {
            const unsigned char *s = sqlite3_column_text(stmt, 0);
            v = sqlite3_mprintf("%s", s != NULL ? (const char *)s : "");
            if (s == NULL) {
                sqlite3_free(v);
                v = NULL;
            }
            rc = SQLITE_OK;
        }
    }
    if (err != NULL) {
        *err = rc == SQLITE_OK || rc == SQLITE_DONE ? NULL
               : captured[0] != '\0' && strstr(sqlite3_errmsg(db), captured) == NULL
                   ? sqlite3_mprintf("%s: %s", sqlite3_errmsg(db), captured)
                   : sqlite3_mprintf("%s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(stmt);
    return v;
}

/* --- the status, for a reader ----------------------------------------------------------------- */

int shell_status_pretty(sqlite3 *db, const char *json, FILE *out)
{
    static const char *summary =
        "WITH s(j) AS (SELECT json(?1)) SELECT "
        "printf('node       %s at %s: %s%s, term %d', j->>'$.id', j->>'$.address', j->>'$.state',"
        "  CASE WHEN j->>'$.role' IN ('voter','') OR j->>'$.state' = j->>'$.role' THEN ''"
        "  ELSE ' (' || (j->>'$.role') || ')' END, j->>'$.term') || char(10) ||"
        "printf('leader     %s', CASE WHEN coalesce(j->>'$.leader','') = '' THEN 'none known' ELSE"
        "  (j->>'$.leader') || ' at ' || (j->>'$.leader_address') END) || char(10) ||"
        "printf('log        first %d, last %d, persisted %d, commit %d, applied %d (floor %d)',"
        "  j->>'$.first_index', j->>'$.last_index', j->>'$.persisted_index',"
        "  j->>'$.commit_index', j->>'$.applied_index', j->>'$.applied_floor') || char(10) ||"
        "printf('activity   %d proposals, %d commits, commit latency p50 %.1f ms / p99 %.1f ms,"
        " %d elections', j->>'$.stats.proposals', j->>'$.stats.commits',"
        "  (j->>'$.stats.commit_latency_p50_us') / 1000.0,"
        "  (j->>'$.stats.commit_latency_p99_us') / 1000.0, j->>'$.stats.elections') || char(10) ||"
        "printf('transfer   %d bytes replicated, %d snapshots sent, %d installed',"
        "  j->>'$.stats.bytes_replicated', j->>'$.stats.snapshots_sent',"
        "  j->>'$.stats.snapshots_installed') ||"
        "CASE WHEN j->>'$.disk_failed' THEN char(10) || 'disk       FAILED: writes are refused'"
        "  ELSE '' END || char(10) ||"
        "printf('cluster    %s', j->>'$.cluster_id') FROM s";
    static const char *members =
        "SELECT e.value->>'id' AS id, e.value->>'address' AS address, e.value->>'role' AS role,"
        " CASE WHEN e.value->>'is_leader' THEN 'yes' ELSE '' END AS leader,"
        " e.value->>'match_index' AS match_index, e.value->>'lag' AS lag,"
        " CASE WHEN json_extract(?1, '$.state') = 'leader' AND e.value->>'id' <> json_extract(?1,"
        " '$.id') THEN e.value->>'last_contact_ms' ELSE '' END AS last_contact_ms,"
        " CASE WHEN e.value->>'id' = json_extract(?1, '$.id') THEN '(self)'"
        " WHEN e.value->>'connected' THEN 'yes' ELSE 'no' END AS connected"
        " FROM json_each(?1, '$.nodes') AS e";
    char *err = NULL;
    char *text = shell_value(db, summary, json, &err);
    if (text == NULL) {
        fprintf(stderr, "error: cannot read the status (%s): %s\n", err != NULL ? err : "empty",
                json);
        sqlite3_free(err);
        return 1;
    }
    fprintf(out, "%s\nmembers\n", text);
    sqlite3_free(text);
    struct shell_output o = {.list = false, .header = true};
    return shell_query(db, members, json, &o, out);
}
